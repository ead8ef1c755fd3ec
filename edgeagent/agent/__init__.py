"""The edge agent: Home Assistant intents → tool calls, on any backend.

`build` trains (teacher fine-tuning, distillation; needs the train extra); `runtime` acts with
no torch or transformers at run time.
"""
