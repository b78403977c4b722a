"""Inference speed: one run prints throughput and latency for the models and the decoders.

    .venv/bin/python bench/bench_inference.py [--seed-artifact ml/artifacts/seed]
        [--production-artifact ml/artifacts/production] [--n 300]

Measured at batch 1 on one thread (as a worker process serves): the seed CNN
under Keras and under TFLite, the production model under TFLite (with its
preprocessing, as Predictor runs it), cold start of a fresh process, and,
per input format on synthetic inputs it generates itself (PNG 8-bit 512 px,
PNG 16-bit 2000x2000, JPEG, DICOM uncompressed, RLE and JPEG 2000
compressed), the upload's decode and PNG re-encode (web process) and the
worker's decode of that stored PNG plus preprocessing. Untrained stand-ins
are used for any artifact that is missing, so the numbers remain meaningful
for speed.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tests.images import dicom_bytes  # noqa: E402  (the same synthetic DICOM builder the tests use)


def _timings(function, *, n: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000.0)
    samples = np.array(samples)
    return {
        "images_per_s": 1000.0 / samples.mean(),
        "p50_ms": float(np.percentile(samples, 50)),
        "p95_ms": float(np.percentile(samples, 95)),
    }


def _print(name: str, result: dict) -> None:
    print(f"{name:<48} {result['images_per_s']:>9.1f} img/s   p50 {result['p50_ms']:7.2f} ms   p95 {result['p95_ms']:7.2f} ms")


def _chest(size_y: int, size_x: int, seed: int = 0) -> np.ndarray:
    """A smooth chest-like synthetic film (dark lungs, bright mediastinum and border) in [0, 1]."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size_y, 0:size_x] / np.array([size_y, size_x])[:, None, None]
    film = 0.75 - 0.45 * (np.exp(-((xs - 0.3) ** 2 / 0.02 + (ys - 0.5) ** 2 / 0.08))
                           + np.exp(-((xs - 0.7) ** 2 / 0.02 + (ys - 0.5) ** 2 / 0.08)))
    film += rng.normal(0, 0.02, film.shape)
    return np.clip(film, 0, 1).astype(np.float32)


def _inputs() -> dict[str, bytes]:
    from pydicom.uid import JPEG2000Lossless, RLELossless

    inputs = {}
    film = _chest(512, 440)
    buffer = io.BytesIO()
    Image.fromarray((film * 255).astype(np.uint8)).save(buffer, format="PNG")
    inputs["PNG 8-bit 440x512"] = buffer.getvalue()
    big = _chest(2000, 2000, seed=1)
    buffer = io.BytesIO()
    Image.fromarray((big * 65535).astype(np.uint16)).save(buffer, format="PNG")
    inputs["PNG 16-bit 2000x2000"] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray((_chest(2000, 1700, seed=2) * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    inputs["JPEG 1700x2000 q90"] = buffer.getvalue()
    for name, syntax in (("DICOM 2000x2000 uncompressed", None), ("DICOM 2000x2000 RLE", RLELossless),
                         ("DICOM 2000x2000 JPEG 2000 lossless", JPEG2000Lossless)):
        try:
            inputs[name] = dicom_bytes(big, bits=12, transfer_syntax=syntax, patient_id="BENCH")
        except Exception as error:  # an encoder plugin may be missing: report, keep benchmarking
            print(f"(skipping {name}: {error})")
    return inputs


def multiply_adds(keras_model) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers; batch norm folds away)."""
    import keras

    total = 0
    for layer in keras_model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            in_channels = layer.input.shape[-1]
            out_shape = layer.output.shape
            positions = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
            if isinstance(layer, keras.layers.Dense):
                total += in_channels * out_shape[-1]
                continue
            kernel = int(np.prod(layer.kernel_size))
            if isinstance(layer, keras.layers.SeparableConv2D):
                total += positions * (kernel * in_channels + in_channels * out_shape[-1])
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                total += positions * kernel * in_channels
            else:
                total += positions * kernel * in_channels * out_shape[-1]
    return int(total)


def _roof_models():
    """Dense convolutions XNNPACK runs nearest the CPU's peak: 3x3 (64 -> 64) and 1x1 (256 -> 256)."""
    import keras

    models = []
    for kernel, channels, size in ((3, 64, 64), (1, 256, 32)):
        inputs = keras.Input((size, size, channels))
        x = inputs
        for index in range(4):
            x = keras.layers.Conv2D(channels, kernel, padding="same", name=f"roof{index}")(x)
        models.append(keras.Model(inputs, x, name=f"roof_{kernel}x{kernel}"))
    return models


def _roof_files(folder: Path) -> list[tuple[Path, int]]:
    """The roof models as TFLite files, each with its multiply-adds per inference."""
    from ml.training.export import export_tflite

    return [(export_tflite(keras_model=model, path=folder / f"{model.name}.tflite"), multiply_adds(model))
            for model in _roof_models()]


ROOF_ROUNDS = 3
ROOF_INFERENCES = 60  # about 600 M multiply-adds each: a second or two per process


def _invoke_loop(path: str, n: int, start_at: float) -> tuple[float, float, int]:
    """One serving process: one-thread interpreter, wait for the common start, run n inferences."""
    from ml.serving.interpreter import make_interpreter

    interpreter = make_interpreter(path, threads=1)
    detail = interpreter.get_input_details()[0]
    x = np.random.default_rng(0).uniform(0, 1, detail["shape"]).astype(np.float32)
    for _ in range(5):
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.time()
    for _ in range(n):
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    return started, time.time(), n


def _predict_loop(path: str, n: int, start_at: float) -> tuple[float, float, int]:
    """One worker process: Predictor (preprocessing, model, heatmap, stability check) on a synthetic film, as the worker serves."""
    from ml.serving.predictor import Predictor

    predictor = Predictor.load(path)
    film = _chest(512, 440)
    for _ in range(3):
        predictor.predict_one(film, with_heatmap=True, check_stability=True)
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.time()
    for _ in range(n):
        predictor.predict_one(film, with_heatmap=True, check_stability=True)
    return started, time.time(), n


def _parallel_rate(function, path: Path, *, processes: int, n: int) -> float:
    """Images/s summed over ``processes`` one-thread processes running at the same time."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 8.0  # every process has loaded its model by then
    with context.Pool(processes) as pool:
        results = pool.starmap(function, [(str(path), n, start_at)] * processes)
    first, last = min(r[0] for r in results), max(r[1] for r in results)
    return sum(r[2] for r in results) / (last - first)


def _keras_model(artifact: Path | None, architecture: str, size: int):
    import keras

    if artifact is not None and (artifact / "model.keras").is_file():
        return keras.models.load_model(artifact / "model.keras", compile=False), f"{artifact}"
    from ml.training.architectures import build_model

    return build_model(architecture=architecture, input_size=size), f"untrained {architecture}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed-artifact", type=Path, default=REPO_ROOT / "ml" / "artifacts" / "seed")
    parser.add_argument("--production-artifact", type=Path, default=REPO_ROOT / "ml" / "artifacts" / "production")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2, help="serving processes run at once (one per core)")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from ml.serving.interpreter import make_interpreter, run_interpreter
    from ml.serving.predictor import Predictor
    from ml.training.export import export_tflite

    print(f"batch 1, one thread, {args.n} timed runs each\n")
    seed_model, seed_origin = _keras_model(args.seed_artifact, "seed", 256)
    x = np.random.default_rng(0).uniform(0, 1, (1, 256, 256, 1)).astype(np.float32)
    _print(f"seed Keras model(x) [{seed_origin}]", _timings(lambda: seed_model(x, training=False), n=args.n))
    with tempfile.TemporaryDirectory() as folder:
        seed_tflite = args.seed_artifact / "model.tflite"
        if not seed_tflite.is_file():
            seed_tflite = export_tflite(keras_model=seed_model, path=Path(folder) / "seed.tflite")
        interpreter = make_interpreter(seed_tflite, threads=1)
        _print("seed TFLite invoke", _timings(lambda: run_interpreter(interpreter, x[0]), n=args.n))

        production = args.production_artifact
        if not (production / "metadata.json").is_file():
            print(f"(no production artifact at {production}; skipping production timings)")
            predictor = None
        else:
            predictor = Predictor.load(production)
            size = predictor.metadata.input_size
            pinput = np.random.default_rng(1).uniform(0, 1, (size, size, 1)).astype(np.float32)
            _print(f"production TFLite invoke ({predictor.metadata.architecture} {size}px)",
                   _timings(lambda: run_interpreter(predictor._interpreter, pinput), n=args.n))
            if predictor.metadata.familiarity:
                _print("production familiarity check (features.tflite + distance)",
                       _timings(lambda: predictor.familiarity_score(pinput), n=args.n))
            film = _chest(512, 440)
            _print("production Predictor.predict_one (preprocess+model+familiarity)", _timings(lambda: predictor.predict_one(film), n=args.n))
            _print("  ... with the heatmap",
                   _timings(lambda: predictor.predict_one(film, with_heatmap=True), n=args.n))
            moved = "unstable" in predictor.predict_one(film, check_stability=True).warnings
            _print(f"  ... and the stability check, as the worker runs it ({'stops early: answer moved' if moved else 'all 3 changes'})",
                   _timings(lambda: predictor.predict_one(film, with_heatmap=True, check_stability=True), n=args.n))
            detector = _chest(2000, 2000, seed=1)
            _print("  the same on a decoded 2000x2000 film",
                   _timings(lambda: predictor.predict_one(detector, with_heatmap=True, check_stability=True),
                            n=max(10, args.n // 10), warmup=2))

    processes = args.processes
    print(f"\nserving on {processes} one-thread processes at once (as the worker runs: one process per core)")
    with tempfile.TemporaryDirectory() as folder:
        roofs = _roof_files(Path(folder))
        rows = [("seed", seed_model, seed_tflite if seed_tflite.is_file() else export_tflite(
            keras_model=seed_model, path=Path(folder) / "seed.tflite"))]
        if predictor is not None:
            rows.append(("production", predictor.keras_model, production / predictor.metadata.model_file))
        # A shared VM's speed drifts by tens of percent within minutes, so the roof is measured the way the
        # models are served (the same processes at once) right before them, round after round.
        print(f"arithmetic roof: the best multiply-add rate of dense convolutions under TFLite, measured as the "
              f"models are served ({processes} one-thread processes at once) just before them, {ROOF_ROUNDS} rounds")
        shares = {label: [] for label, _model, _path in rows}
        for round_number in range(1, ROOF_ROUNDS + 1):
            roof = max(_parallel_rate(_invoke_loop, path, processes=processes, n=ROOF_INFERENCES) * macs / 1e9
                       for path, macs in roofs)
            print(f"round {round_number}: roof {roof:.1f} GMAC/s on {processes} processes")
            for label, keras_model, path in rows:
                macs = multiply_adds(keras_model)
                allowed = roof * 1e9 / macs
                rate = _parallel_rate(_invoke_loop, path, processes=processes, n=args.n * 2)
                shares[label].append(rate / allowed)
                print(f"  {label:<11} {macs / 1e6:8.1f} M multiply-adds   {rate:8.1f} img/s on {processes} processes   "
                      f"arithmetic allows {allowed:8.1f} img/s   -> {100 * rate / allowed:5.1f}% of it")
        for label, values in shares.items():
            print(f"{label:<11} median {100 * np.median(values):5.1f}% of what its arithmetic allows "
                  f"(rounds: {', '.join(f'{100 * value:.1f}%' for value in values)})")
        if predictor is not None:
            rate = _parallel_rate(_predict_loop, production, processes=processes, n=args.n)
            print(f"production Predictor.predict_one as the worker runs it (512 px film: preprocess, model, heatmap, stability check) "
                  f"{rate:8.1f} img/s on {processes} processes")

    if predictor is not None:
        code = (
            "import time; t=time.perf_counter(); import numpy as np; from ml.serving.predictor import Predictor; "
            f"p=Predictor.load({str(production)!r}); p.predict_one(np.full((512,440),0.5,np.float32), with_heatmap=True, check_stability=True); "
            "print((time.perf_counter()-t)*1000)"
        )
        cold = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                                     check=True).stdout.split()[-1]) for _ in range(3)]
        print(f"\ncold start (new process: import, Predictor.load, first prediction with heatmap and stability check): {min(cold):.0f} / {np.median(cold):.0f} ms (min / median of 3)")

    from ml.serving.imaging import decode_image, reencoded_png
    from ml.serving.preprocess import PreprocessConfig, preprocess

    config = predictor.config if predictor is not None else PreprocessConfig(input_size=256)
    # The portal decodes an upload once, in the web process, and stores it re-encoded as PNG
    # (8-bit, or 16-bit for DICOM and 16-bit PNG); the worker decodes that stored PNG.
    print(f"\nupload (web process: full decode, PNG re-encode) and worker (decode the stored PNG, preprocess)\n"
          f"preprocessing: {config}")
    for name, data in _inputs().items():
        runs = max(10, args.n // 10)
        upload = _timings(lambda: reencoded_png(decode_image(data)), n=runs, warmup=2)
        decode_only = _timings(lambda: decode_image(data), n=runs, warmup=2)
        stored = reencoded_png(decode_image(data))
        worker = _timings(lambda: preprocess(decode_image(stored).pixels, config), n=runs, warmup=2)
        print(f"{name:<36} {len(data) / 1e6:6.2f} MB   decode p50 {decode_only['p50_ms']:7.1f} ms   "
              f"upload p50 {upload['p50_ms']:7.1f} ms   worker decode+preprocess p50 {worker['p50_ms']:7.1f} ms  "
              f"p95 {worker['p95_ms']:7.1f} ms")
    plain = PreprocessConfig(input_size=256)
    film = _chest(512, 440)
    _print("preprocess only, 512 px film, seed config", _timings(lambda: preprocess(film, plain), n=args.n))
    if predictor is not None:
        _print("preprocess only, 512 px film, production config", _timings(lambda: preprocess(film, config), n=args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
