#!/usr/bin/env python3
"""Produce the reference outputs hark's engines are tested against (run once; results are committed).

Reference implementations: onnxruntime (PyPI) for both models, and Pipecat's numpy port of
transformers' WhisperFeatureExtractor for the Smart Turn log-mel features. Inputs are the
checksum-pinned 16 kHz speech files models/fetch.py writes, so only outputs are stored.

Run it on a CPU whose onnxruntime int8 kernel is exact (x86 with AVX-512 VNNI or AVX-VNNI, or
ARM): without VNNI, onnxruntime's u8 x s8 kernel saturates and Smart Turn's outputs move by
~0.1 (hark itself avoids that; see src/listen/engine/exact_int8.rs).

usage: python3 -m venv /tmp/ref && /tmp/ref/bin/pip install onnxruntime==1.31.1 numpy
       /tmp/ref/bin/python scripts/make-reference.py
"""
import json
import wave
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "reference"
CACHE = Path.home() / ".cache" / "hark" / "wheels" / "any"


def read_wav16k(name: str) -> np.ndarray:
    with wave.open(str(ROOT / "models" / "speech" / name)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def whisper_features():
    wheel = next(CACHE.glob("pipecat_ai-1.14.0-*.whl"))
    src = zipfile.ZipFile(wheel).read("pipecat/audio/turn/smart_turn/_whisper_features.py")
    ns: dict = {}
    exec(compile(src, "_whisper_features.py", "exec"), ns)
    return ns["compute_whisper_log_mel_features"]


def session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(ROOT / path), sess_options=so)


def silero(audio: np.ndarray) -> list:
    """Per-window speech probability, 512-sample windows with 64 samples of carried context."""
    s = session("models/silero_vad_op18_ifless.onnx")
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros(64, dtype=np.float32)
    sr = np.array(16000, dtype=np.int64)
    probs = []
    for i in range(len(audio) // 512):
        chunk = audio[i * 512:(i + 1) * 512]
        x = np.concatenate([context, chunk])[None, :]
        out, state = s.run(None, {"input": x, "sr": sr, "state": state})
        probs.append(float(out[0, 0]))
        context = chunk[-64:]
    return probs


def last_8s(audio: np.ndarray, end: int) -> np.ndarray:
    """Smart Turn input: the 8 s before `end`, zero-padded at the front."""
    x = audio[max(0, end - 128000):end]
    return np.pad(x, (128000 - len(x), 0))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    feats = whisper_features()
    turn = session("models/smart-turn-v3.2-cpu.onnx")
    ref = {"silero": [], "mel": [], "smart_turn": []}
    for name in ["beckett.wav", "clone-test.wav"]:
        audio = read_wav16k(name)
        ref["silero"].append({"file": name, "probs": silero(audio)})
        # Smart Turn on every 0.25 s cut from 1 s to the end: ends of sentences and cuts mid-word.
        for end in range(16000, len(audio) + 1, 4000):
            f = feats(last_8s(audio, end))
            p = turn.run(None, {"input_features": f[None]})[0]
            ref["smart_turn"].append({"file": name, "end": end, "prob": float(p[0, 0])})
        # Full log-mel for one window per file, stored as raw little-endian f32 [80][800].
        end = len(audio)
        f = feats(last_8s(audio, end)).astype("<f4")
        blob = f"mel-{Path(name).stem}.f32"
        (OUT / blob).write_bytes(f.tobytes())
        p = turn.run(None, {"input_features": f[None]})[0]
        ref["mel"].append({"file": name, "end": end, "features": blob, "prob": float(p[0, 0])})
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
