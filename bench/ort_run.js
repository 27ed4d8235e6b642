// bench/ort_run.js: times an ONNX model in ONNX Runtime (npm's onnxruntime-node, CPU) on a
// pool of inputs, as bench/rotate.c times moec: one untimed pass over the pool (its
// outputs go to y.bin), then `calls` timed calls, call i on batch i mod P.
// usage: node ort_run.js model.onnx pool.bin P T D calls threads y.bin
// pool.bin / y.bin: raw little-endian float32 [P, T, D]. Prints "times_ms t_0 t_1 ...".
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, poolPath, P, T, D, calls, threads, yPath] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads),
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const buf = fs.readFileSync(poolPath);
  const pool = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const n = Number(T) * Number(D);
  const feeds = [];
  for (let p = 0; p < Number(P); p++) {
    feeds.push({x: new ort.Tensor('float32', pool.subarray(p * n, (p + 1) * n), [Number(T), Number(D)])});
  }
  const y = new Float32Array(Number(P) * n);
  for (let p = 0; p < feeds.length; p++) { // warm-up, and the outputs to check
    const out = await session.run(feeds[p]);
    y.set(out.y.data, p * n);
  }
  fs.writeFileSync(yPath, Buffer.from(y.buffer));
  const times = [];
  for (let i = 0; i < Number(calls); i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds[i % feeds.length]);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  console.log('times_ms ' + times.map((t) => t.toFixed(4)).join(' '));
}
main().catch((e) => { console.error(e); process.exit(1); });
