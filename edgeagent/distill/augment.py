"""Transfer-set augmentation: words swapped for their neighbours in the teacher's embedding space.

TinyBERT (Jiao et al., 2020) grows the data a student is distilled on by replacing words with
similar ones and letting the teacher label the result. The teacher's pretrained word embeddings
know that "speaker" is near "amplifier" and "receiver", and "lamp" near "bulb" and "fixture";
a student distilled only on the task's few hundred names never learns that. Sentences whose
names are varied this way teach it which words can make up a name, so it tags names it has
never seen the way the teacher does.

Numpy only; `NeighbourWords.from_teacher` reads a torch teacher's embedding table.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from ..errors import InputError


class NeighbourWords:
    """Nearest whole-word neighbours by cosine similarity of word embeddings.

    Args:
        embeddings: [vocabulary, hidden] rows indexed by the tokenizer's ids.
        vocab: the tokenizer's token → id map.
        k: how many neighbours a word may be replaced with.
        exclude: words never offered as a replacement (a workload's place names, say, so a
            device name never borrows an area's word), as a collection or a predicate.

    Only whole, alphabetic, lower-case vocabulary entries of two letters or more are offered:
    no word pieces, special tokens or punctuation.
    """

    def __init__(self, embeddings: np.ndarray, vocab: Mapping[str, int], *, k: int = 10,
                 exclude: Iterable[str] | Callable[[str], bool] = ()) -> None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise InputError(f"embeddings must be [vocabulary, hidden], got shape {embeddings.shape}",
                             field="embeddings")
        if vocab and max(vocab.values()) >= embeddings.shape[0]:
            raise InputError(f"the vocabulary has ids up to {max(vocab.values())} but the embeddings only "
                             f"{embeddings.shape[0]} rows: pass the tokenizer that goes with them", field="vocab")
        if not 1 <= k < embeddings.shape[0]:
            raise InputError(f"k must be at least 1 and below the vocabulary's {embeddings.shape[0]} words, "
                             f"got {k}", field="k")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        self._unit = embeddings / np.maximum(norms, 1e-12)
        self._ids = dict(vocab)
        self._words = {i: w for w, i in vocab.items()}
        excluded = exclude if callable(exclude) else set(exclude).__contains__
        self._offered = np.zeros(embeddings.shape[0], dtype=bool)
        for word, index in vocab.items():
            if len(word) >= 2 and word.isalpha() and word.islower() and not excluded(word):
                self._offered[index] = True
        self.k = k
        self._cache: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_teacher(cls, teacher, tokenizer, **kwargs) -> NeighbourWords:
        """Neighbours in a JointEncoder teacher's input embeddings, by the tokenizer's ids.

        A teacher with a pruned vocabulary (`token_map`) is read through its map; ids it maps
        to [UNK] share that row, so they are never offered.
        """
        table = teacher.encoder.embeddings.word_embeddings.weight.detach().cpu().numpy()
        vocab = tokenizer.get_vocab()
        token_map = getattr(teacher, "token_map", None)
        if token_map is not None:
            rows = token_map.detach().cpu().numpy()
            unk_row = rows[vocab["[UNK]"]] if "[UNK]" in vocab else None
            table = table[rows]
            vocab = {w: i for w, i in vocab.items() if unk_row is None or rows[i] != unk_row or w == "[UNK]"}
        return cls(table, vocab, **kwargs)

    def neighbours(self, word: str) -> tuple[str, ...]:
        """The `k` offered words closest to `word`, closest first; () for a word not in the vocabulary."""
        if word not in self._cache:
            index = self._ids.get(word)
            if index is None:
                self._cache[word] = ()
            else:
                similarity = self._unit @ self._unit[index]
                similarity[~self._offered] = -np.inf
                similarity[index] = -np.inf
                top = np.argpartition(-similarity, self.k)[:self.k]
                top = top[np.argsort(-similarity[top])]
                self._cache[word] = tuple(self._words[int(i)] for i in top if np.isfinite(similarity[i]))
        return self._cache[word]

    def vary(self, text: str, rng: random.Random, p: float = 0.5) -> str:
        """`text` with each of its space-separated words replaced, with probability `p`, by one of
        its neighbours. Words with none stay."""
        words = []
        for word in text.split(" "):
            choices = self.neighbours(word)
            words.append(rng.choice(choices) if choices and rng.random() < p else word)
        return " ".join(words)
