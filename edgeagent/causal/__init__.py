"""Generative decoders (issue 20): intake, export to the decoder IR, weight-only quantization.

- `export_causal_lm(source, out, *, max_length=None, opset=None)`: a Hugging Face folder or id,
  a `.gguf` file or `module:function` → the decoder IR folder of /work/notes/decoder-contract.md,
  proved against transformers (`parity`).
- `open_decoder_ir(path)`: open such a folder.
- `finetune_causal_lm(source, out, ...)`, `distill_causal_lm(teacher, out, ...)`: a decoder
  trained into a workload's tool caller (peft LoRA or full), and its distilled decoder student.
- `check_gguf`, `check_safetensors`: the file checks run before any parser sees a file.
- `quantize_ort` (ONNX Runtime MatMulNBits) and `openvino_weights` (stateful OpenVINO model,
  `nncf.compress_weights`): the weight-only recipes the backends call.

Importing this package imports neither torch nor a backend SDK.
"""

from __future__ import annotations

from .export import DecoderIR, export_causal_lm, open_decoder_ir
from .finetune import distill_causal_lm, finetune_causal_lm
from .gguf_check import GGUFInfo, GGUFLimits, check_gguf
from .sources import SUPPORTED_ARCHITECTURES, check_safetensors

__all__ = ["DecoderIR", "GGUFInfo", "GGUFLimits", "SUPPORTED_ARCHITECTURES", "check_gguf",
           "check_safetensors", "distill_causal_lm", "export_causal_lm", "finetune_causal_lm", "open_decoder_ir"]
