// tests/ort/run_model.js: runs an ONNX model once in ONNX Runtime (npm's onnxruntime-node,
// CPU) for the tests that compare moec with it.
// usage: node run_model.js model.onnx out.bin NAME=in.bin:D0,D1,... ...
// Inputs and the first output are raw little-endian float32; prints the output's shape.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, outPath, ...specs] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model, {intraOpNumThreads: 1});
  const feeds = {};
  for (const spec of specs) {
    const [name, rest] = spec.split('=');
    const [path, dims] = rest.split(':');
    const buf = fs.readFileSync(path);
    const data = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    feeds[name] = new ort.Tensor('float32', data, dims.split(',').map(Number));
  }
  const out = await session.run(feeds);
  const y = out[session.outputNames[0]];
  fs.writeFileSync(outPath, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  console.log(y.dims.join(','));
}

main().catch((e) => {
  console.error(String(e && e.message ? e.message : e));
  process.exit(1);
});
