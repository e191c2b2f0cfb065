"""Copy a sentence-transformers model directory with its float32 weights stored as float16
(half the size). For carrying the real model to a machine with a transfer limit (the lent GPU
machine takes 64 MiB in all); embtune loads f16 weights back into f32. Standard library only.
usage: pack-model-f16.py SRC_DIR DST_DIR"""
import array
import json
import os
import shutil
import struct
import sys

src, dst = sys.argv[1], sys.argv[2]
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst, symlinks=False, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx", "openvino"))
path = os.path.join(src, "model.safetensors")
data = open(path, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
body = memoryview(data)[8 + n:]
out_header, chunks, off = {}, [], 0
for name, info in header.items():
    if name == "__metadata__":
        out_header[name] = info
        continue
    s, e = info["data_offsets"]
    raw = bytes(body[s:e])
    dtype = info["dtype"]
    if dtype == "F32":
        a = array.array("f")
        a.frombytes(raw)
        raw = struct.pack(f"<{len(a)}e", *a)
        dtype = "F16"
    out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [off, off + len(raw)]}
    chunks.append(raw)
    off += len(raw)
h = json.dumps(out_header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for c in chunks:
        f.write(c)
print(f"{dst}: {off / 2**20:.1f} MiB of float16 weights")
