"""Why did the assistant answer a turn the way it did? For operators, on demand, off the customer's path.

An explanation of a stored turn (`store.turns()` row) holds:
- the words that drove the chosen intent: **occlusion** on the served model (leave one word out, the
  drop of the intent's probability is the word's weight; one batch of n+1 texts through whatever runtime
  serves, ONNX or torch), or **integrated gradients** (captum) on the torch student when one is on disk;
  benchmarks/explain_bench.py measures both (latency, faithfulness) and the console uses occlusion;
- the nearest training examples (cosine similarity in the served encoder's space);
- the FAQ candidates with their scores, the out-of-scope score against its threshold and the policy
  rule that decided, as recorded with the turn (`details`).
The message is the stored, redacted one; a turn answered by another model version says so.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- model access
def predict_full(nlu: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The full intent distribution [n, len(nlu.labels)] and the embeddings [n, d] of `texts`."""
    texts = [str(t) for t in texts]
    model = getattr(nlu, "model", None)
    if model is not None:                                  # ModelNLU: torch or ONNX SupportModel
        probs, emb = model.predict(texts)
        return np.asarray(probs, np.float32), np.asarray(emb, np.float32)
    clf = getattr(nlu, "_clf", None)
    if clf is not None:                                    # FrozenEncoderNLU
        emb = np.asarray(nlu.embedder.encode(texts), np.float32)
        return np.asarray(clf.predict_proba(emb), np.float32), emb
    results = nlu.parse_batch(texts)                       # anything else: its top intents only
    index = {name: i for i, name in enumerate(nlu.labels)}
    probs = np.zeros((len(texts), len(nlu.labels)), np.float32)
    for row, r in zip(probs, results):
        for name, p in r.ranking:
            if name in index:
                row[index[name]] = p
    return probs, np.stack([np.asarray(r.embedding, np.float32) for r in results])


def words(text: str) -> list[str]:
    """The units an explanation weighs: whitespace-separated words (what an operator can read)."""
    return str(text).split()


# ------------------------------------------------------------------------------- attributions
@dataclass
class Attribution:
    intent: str
    probability: float
    words: list[str]
    scores: list[float]          # one per word: how much it pushed the probability of `intent` up
    method: str
    ms: float = 0.0

    def top(self, k: int = 3) -> list[int]:
        """Indexes of the k words with the largest weights."""
        return [int(i) for i in np.argsort(-np.asarray(self.scores), kind="stable")[:k]]


def occlusion(nlu: Any, text: str, intent: str | None = None) -> Attribution:
    """Leave-one-word-out on the served model: weight = p(intent | text) - p(intent | text without the word)."""
    started = time.perf_counter()
    ws = words(text)
    variants = [" ".join(ws)] + [" ".join(ws[:i] + ws[i + 1:]) for i in range(len(ws))]
    probs, _ = predict_full(nlu, variants)
    labels = list(nlu.labels)
    target = labels.index(intent) if intent in labels else int(np.argmax(probs[0]))
    base = float(probs[0, target])
    scores = [base - float(p) for p in probs[1:, target]]
    return Attribution(labels[target], base, ws, scores, "occlusion", (time.perf_counter() - started) * 1000)


class IntegratedGradients:
    """Integrated gradients (captum) on a torch `SupportModel`, from an all-[PAD] baseline to the message,
    summed over each word's sub-word tokens."""

    def __init__(self, model: Any, n_steps: int = 16):
        from captum.attr import LayerIntegratedGradients

        self.model, self.n_steps = model.eval(), int(n_steps)
        self.labels = list(model.labels)

        def forward(input_ids, attention_mask):
            import torch

            out = model(input_ids=input_ids, attention_mask=attention_mask)
            return torch.softmax(out.logits / float(model.temperature), dim=-1)

        self._forward = forward
        self._ig = LayerIntegratedGradients(forward, model.encoder.embeddings.word_embeddings)

    def __call__(self, text: str, intent: str | None = None) -> Attribution:
        import torch

        started = time.perf_counter()
        ws = words(text)
        tok = self.model.tokenizer
        enc = tok(ws, is_split_into_words=True, truncation=True, max_length=self.model.max_length,
                  return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        special = torch.tensor(tok.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)).bool()
        baseline = torch.where(special, ids[0], torch.full_like(ids[0], tok.pad_token_id or 0)).unsqueeze(0)
        with torch.no_grad():
            probs = self._forward(ids, mask)[0]
        target = self.labels.index(intent) if intent in self.labels else int(torch.argmax(probs))
        attributions = self._ig.attribute(ids, baselines=baseline, additional_forward_args=(mask,), target=target,
                                          n_steps=self.n_steps, internal_batch_size=self.n_steps)
        per_token = attributions.sum(dim=-1)[0].detach().numpy()
        scores = np.zeros(len(ws))
        for position, word in enumerate(enc.word_ids(0)):
            if word is not None:
                scores[word] += per_token[position]
        return Attribution(self.labels[target], float(probs[target]), ws, scores.tolist(), "integrated_gradients",
                           (time.perf_counter() - started) * 1000)


def load_torch_student(config: Any) -> Any | None:
    """The torch student the served model was compressed from (or the teacher), if one is on disk."""
    from runtime.folder import read_model_meta

    for directory in (config.layout.student, config.layout.teacher):
        try:
            if (directory / "attendant.json").is_file() and read_model_meta(directory).get("runtime", "torch") == "torch":
                from runtime.model import SupportModel

                return SupportModel.from_pretrained(directory)
        except Exception as exc:   # an explanation without IG is still an explanation
            log.info("no torch model for integrated gradients in %s: %s", directory, exc)
    return None


# ------------------------------------------------------------------------------- a turn
@dataclass
class Explanation:
    turn_id: str
    message: str
    action: str
    recorded_intent: str | None
    recorded_confidence: float | None
    attribution: Attribution | None
    nearest: list[tuple[str, str, float]] = field(default_factory=list)   # (text, intent, cosine similarity)
    faq: list[tuple[str, str, float]] = field(default_factory=list)       # (faq id, question, score)
    faq_threshold: float | None = None
    oos_score: float | None = None
    oos_threshold: float | None = None
    decision: str = ""
    ranking: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""
    ms: float = 0.0


def explain_turn(turn: dict[str, Any], assistant: Any, reference: Any = None, *, k: int = 5,
                 attributor: Any = None) -> Explanation:
    """The explanation of one stored turn; `reference` (evaluation.drift.Reference) gives the training
    examples for the nearest ones; `attributor(text, intent)` replaces occlusion (e.g. IntegratedGradients)."""
    started = time.perf_counter()
    details = turn.get("details") or {}
    text = str(turn.get("user_text") or "")
    exp = Explanation(str(turn.get("turn_id", "")), text, str(turn.get("action") or ""), turn.get("intent"),
                      turn.get("confidence"), None, decision=str(details.get("decision") or ""),
                      ranking=[(str(a), float(b)) for a, b in details.get("ranking") or []])
    version = turn.get("model_version")
    if version and version != getattr(assistant, "model_version", version):
        exp.note = (f"This turn was answered by model {version}; the words and neighbours below are those of the "
                    f"model served now ({assistant.model_version}).")
    if text.strip():
        intent = turn.get("intent")
        exp.attribution = attributor(text, intent) if attributor is not None else occlusion(assistant.nlu, text, intent)
        if reference is not None:
            emb = np.asarray(assistant.nlu.embedder.encode([text]), np.float32)
            dist, idx = reference.nearest(emb / max(float(np.linalg.norm(emb)), 1e-12), k)
            exp.nearest = [(reference.train_texts[i], reference.train_intents[i], round(1.0 - float(d), 4))
                           for d, i in zip(dist[0], idx[0])]
    records = getattr(assistant, "faq_records", {}) or {}
    exp.faq = [(str(fid), str(records.get(fid, {}).get("question", "?")), float(score))
               for fid, score in details.get("faq") or []]
    thresholds = getattr(assistant, "thresholds", None)
    exp.faq_threshold = getattr(thresholds, "faq", None)
    exp.oos_score = details.get("oos_score")
    oos = getattr(assistant, "oos", None)
    exp.oos_threshold = float(oos.threshold) if oos is not None and hasattr(oos, "threshold") else None
    exp.ms = (time.perf_counter() - started) * 1000
    return exp


def _md(text: str) -> str:
    """A customer's words shown as text, never as markup."""
    out = str(text).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "`*_{}[]()#+-.!|~":
        out = out.replace(ch, "\\" + ch)
    return out.replace("\n", " ")


def explanation_markdown(exp: Explanation) -> str:
    lines = [f"### Turn `{exp.turn_id}`", f"**Message (redacted):** {_md(exp.message) or '(empty)'}",
             f"**Action:** {exp.action} · **intent:** {exp.recorded_intent} "
             f"({(exp.recorded_confidence or 0.0):.3f})", f"**Policy rule:** {_md(exp.decision) or '(none recorded)'}"]
    if exp.note:
        lines.append(f"_{_md(exp.note)}_")
    a = exp.attribution
    if a is not None and a.words:
        lines += ["", f"#### Words that drove `{a.intent}` (p = {a.probability:.3f}, {a.method}, {a.ms:.0f} ms)",
                  "| word | weight |", "|---|---|"]
        lines += [f"| {_md(a.words[i])} | {a.scores[i]:+.3f} |" for i in a.top(min(8, len(a.words)))]
    if exp.ranking:
        lines += ["", "**Intent ranking:** " + ", ".join(f"{n} {p:.3f}" for n, p in exp.ranking)]
    if exp.nearest:
        lines += ["", "#### Nearest training examples", "| example | intent | similarity |", "|---|---|---|"]
        lines += [f"| {_md(t)} | {i} | {s:.3f} |" for t, i, s in exp.nearest]
    if exp.faq:
        shown = f" (answer threshold {exp.faq_threshold:.3f})" if exp.faq_threshold is not None else ""
        lines += ["", f"#### FAQ candidates{shown}", "| FAQ | question | score |", "|---|---|---|"]
        lines += [f"| {fid} | {_md(q)} | {s:.3f} |" for fid, q, s in exp.faq]
    if exp.oos_score is not None:
        verdict = ""
        if exp.oos_threshold is not None:
            verdict = " → out of scope" if exp.oos_score < exp.oos_threshold else " → in scope"
            verdict = f" vs threshold {exp.oos_threshold:.3f} (below is out of scope){verdict}"
        lines += ["", f"**Out-of-scope score:** {exp.oos_score:.3f}{verdict}"]
    lines += ["", f"_Explained in {exp.ms:.0f} ms._"]
    return "\n".join(lines)
