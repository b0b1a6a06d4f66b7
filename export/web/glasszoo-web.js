// The page of a `glasszoo export NAME --web DIR` folder: runs model.onnx with onnxruntime-web (WebAssembly)
// and draws the explanation from the ONNX outputs alone, as metadata.json describes them. No model code here.
(function () {
  "use strict";
  const state = { metadata: null, session: null, lastInput: null, lastOutputs: null };
  const SCALE = 6; // screen pixels per input pixel

  function element(id) { return document.getElementById(id); }

  function setStatus(text) { element("status").textContent = text; }

  async function load() {
    state.metadata = await (await fetch("metadata.json")).json();
    ort.env.wasm.numThreads = 1; // no SharedArrayBuffer: any static server will do
    ort.env.wasm.wasmPaths = "./";
    state.session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
    document.title = `${state.metadata.model_name} — glasszoo`;
    element("title").textContent = `${state.metadata.model_name} (${state.metadata.family})`;
    setStatus("Ready: drop an image here or pick one.");
    return true;
  }

  // Runs `batch` images given as one flat NHWC Float32Array; returns {name: {dims, data}}.
  async function run(data, batch) {
    const [h, w, c] = state.metadata.input.shape;
    const feeds = {};
    feeds[state.metadata.input.name] = new ort.Tensor("float32", data, [batch, h, w, c]);
    const results = await state.session.run(feeds);
    const outputs = {};
    for (const name of state.metadata.outputs) {
      outputs[name] = { dims: Array.from(results[name].dims), data: results[name].data };
    }
    return outputs;
  }

  // An image element or bitmap as the model's input: resized by the browser to H x W, grey as Pillow's "L" converts.
  function pixels(image) {
    const [h, w, c] = state.metadata.input.shape;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.imageSmoothingQuality = "high";
    context.drawImage(image, 0, 0, w, h);
    const rgba = context.getImageData(0, 0, w, h).data;
    const data = new Float32Array(h * w * c);
    for (let i = 0; i < h * w; i++) {
      const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
      if (c === 1) {
        data[i] = ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16) / 255;
      } else {
        data[3 * i] = r / 255;
        data[3 * i + 1] = g / 255;
        data[3 * i + 2] = b / 255;
      }
    }
    return data;
  }

  function probabilities(logits) {
    if (state.metadata.output_activation === "sigmoid") return logits.map((v) => 1 / (1 + Math.exp(-v)));
    const top = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - top));
    const total = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / total);
  }

  // The (H, W) map of image b (and class k where the output holds one map per class), channels summed.
  function mapOf(output, b, k, channel) {
    const [h, w] = state.metadata.input.shape;
    const dims = output.dims;
    const map = new Float32Array(h * w);
    if (dims.length === 3) {
      map.set(output.data.subarray(b * h * w, (b + 1) * h * w));
    } else if (dims.length === 4 && channel !== undefined) { // (B, H, W, P): one map of P
      const p = dims[3];
      for (let i = 0; i < h * w; i++) map[i] = output.data[(b * h * w + i) * p + channel];
    } else if (dims.length === 5) { // (B, K, H, W, C): the class's map, channels summed
      const [, classes, , , c] = dims;
      const start = ((b * classes + k) * h * w) * c;
      for (let i = 0; i < h * w; i++) {
        let s = 0;
        for (let j = 0; j < c; j++) s += output.data[start + i * c + j];
        map[i] = s;
      }
    }
    return map;
  }

  // The input image with a signed map over it: red positive, blue negative, opacity by |value| / max |value|.
  function drawOverlay(canvas, input, map, signed) {
    const [h, w, c] = state.metadata.input.shape;
    canvas.width = w * SCALE;
    canvas.height = h * SCALE;
    const context = canvas.getContext("2d");
    const bound = Math.max(1e-12, ...Array.from(map, (v) => Math.abs(v)));
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        const grey = c === 1 ? input[i] : (input[3 * i] + input[3 * i + 1] + input[3 * i + 2]) / 3;
        const base = Math.round(255 * grey);
        const v = map[i] / bound;
        const alpha = Math.min(1, Math.abs(v)) * 0.8;
        const colour = v >= 0 || !signed ? [230, 30, 30] : [30, 60, 230];
        const mix = colour.map((value) => Math.round(alpha * value + (1 - alpha) * base));
        context.fillStyle = `rgb(${mix[0]}, ${mix[1]}, ${mix[2]})`;
        context.fillRect(x * SCALE, y * SCALE, SCALE, SCALE);
      }
    }
  }

  function panel(caption) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    const text = document.createElement("figcaption");
    text.textContent = caption;
    figure.append(canvas, text);
    element("pictures").append(figure);
    return canvas;
  }

  function draw(input, outputs, b) {
    const meta = state.metadata;
    const names = meta.class_names;
    const logits = Array.from(outputs.logits.data.subarray(b * names.length, (b + 1) * names.length));
    const p = probabilities(logits);
    const order = logits.map((v, i) => i).sort((i, j) => logits[j] - logits[i]);
    const k = order[0];
    element("prediction").textContent = `${names[k]} (p = ${p[k].toFixed(3)}); then ${names[order[1]]} (${p[order[1]].toFixed(3)}), ${names[order[2]]} (${p[order[2]].toFixed(3)})`;
    element("pictures").replaceChildren();
    const picture = meta.picture || {};
    const inputCanvas = panel("input");
    drawOverlay(inputCanvas, input, new Float32Array(input.length / meta.input.shape[2]), true);
    if (picture.heatmap) {
      drawOverlay(panel(`${picture.heatmap}: evidence for ${names[k]}`), input, mapOf(outputs[picture.heatmap], b, k), true);
    }
    if (picture.part_maps && picture.part_contributions) {
      const contributions = outputs[picture.part_contributions]; // (B, P, K)
      const parts = contributions.dims[1];
      const mine = [];
      for (let j = 0; j < parts; j++) mine.push([contributions.data[(b * parts + j) * names.length + k], j]);
      mine.sort((x, y) => y[0] - x[0]);
      for (const [value, j] of mine.slice(0, 3)) {
        drawOverlay(panel(`part ${j}: +${value.toFixed(2)} to ${names[k]}`), input, mapOf(outputs[picture.part_maps], b, k, j), false);
      }
    }
  }

  async function explainImage(image) {
    const input = pixels(image);
    const outputs = await run(input, 1);
    state.lastInput = input;
    state.lastOutputs = outputs;
    draw(input, outputs, 0);
    setStatus("Explained. Drop or pick another image.");
  }

  async function explainFile(file) {
    try {
      const bitmap = await createImageBitmap(file);
      await explainImage(bitmap);
    } catch (error) {
      setStatus(`Cannot explain ${file.name}: ${error.message || error}`);
    }
  }

  function plain(outputs) {
    const result = {};
    for (const [name, value] of Object.entries(outputs)) result[name] = { dims: value.dims, data: Array.from(value.data) };
    return result;
  }

  document.addEventListener("DOMContentLoaded", () => {
    element("file").addEventListener("change", (event) => { if (event.target.files[0]) explainFile(event.target.files[0]); });
    const zone = element("drop");
    zone.addEventListener("dragover", (event) => event.preventDefault());
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer.files[0]) explainFile(event.dataTransfer.files[0]);
    });
  });

  // For scripts and tests: glasszoo.ready, glasszoo.run(flat array, batch), glasszoo.last().
  window.glasszoo = {
    ready: new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve)).then(load).catch((error) => {
      setStatus(`Cannot load the model: ${error.message || error}`);
      throw error;
    }),
    run: async (flat, batch) => plain(await run(Float32Array.from(flat), batch)),
    last: () => (state.lastOutputs ? { input: Array.from(state.lastInput), outputs: plain(state.lastOutputs) } : null),
  };
})();
