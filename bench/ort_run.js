// bench/ort_run.js: times an ONNX model in ONNX Runtime (npm's onnxruntime-node, CPU).
// usage: node ort_run.js model.onnx x.bin T D runs threads y.bin
// x.bin / y.bin: raw little-endian float32. Prints "median_ms <ms>".
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, xPath, T, D, runs, threads, yPath] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const buf = fs.readFileSync(xPath);
  const x = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const feeds = {x: new ort.Tensor('float32', x, [Number(T), Number(D)])};
  let out = await session.run(feeds); // warm-up
  const times = [];
  for (let i = 0; i < Number(runs); i++) {
    const t0 = process.hrtime.bigint();
    out = await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  fs.writeFileSync(yPath, Buffer.from(out.y.data.buffer, out.y.data.byteOffset, out.y.data.byteLength));
  console.log('median_ms ' + times[Math.floor(times.length / 2)]);
}
main().catch((e) => { console.error(e); process.exit(1); });
