"""Dequantize a GGUF to F16 or F32 weights (same vocabulary and metadata).

    python bench/dequantize.py SRC.gguf DST.gguf [f16|f32]

llama.cpp's batch and one-token kernels round quantized weights differently, so a near tie
can go either way when only the batching changes. On F16/F32 weights they agree: the
benchmarks that compare answers token for token (bench/reuse_quality.py, bench/drafting.py)
use such a copy of SmolLM2 to see only the effect they measure. The output is the llama
architecture's layout (SmolLM2 is a llama model).
"""

from __future__ import annotations

import sys

import gguf
import numpy as np


def dequantize(source: str, target: str, dtype: str = "f16") -> None:
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, arch="llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]) for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_key_value(name, value, kind, sub_type=sub)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_key_value(name, bytes(field.parts[field.data[0]]), kind)
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], kind)
    for tensor in reader.tensors:
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weights = weights.reshape(tuple(reversed([int(x) for x in tensor.shape])))
        if dtype == "f16" and weights.ndim == 2:
            weights = weights.astype(np.float16)
        writer.add_tensor(tensor.name, weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["f16"], ["f32"]):
        sys.exit(__doc__)
    dequantize(*sys.argv[1:])
