"""Generate with a causal LM, then capture the whole sequence (prompt + answer).

:func:`trace_generate` runs ``model.generate`` once, then captures prompt and answer in one
forward pass (and one backward pass for the target) through :func:`attn_widgets.trace`.
It returns a :class:`GenerationTrace`: the trace of the default target (the last generated
token) plus every other generated token as a target on demand, computed with one
forward + backward when first asked for and cached, without generating again.

Which tokens are which, in every trace it returns:

* ``trace.meta["prompt_length"]`` (int ``P``): tokens ``0 .. P-1`` are the prompt,
  ``P .. T-1`` were generated;
* ``trace.meta["generated"]``: read-only bool ``[T]``, True for generated tokens;
* ``trace.meta["target_position"]``: the generated token the gradients explain; the target
  is the logit the model gave that token at the position that predicted it,
  ``meta["position"] == target_position - 1``;
* ``trace.special_mask``: the tokenizer's special tokens and, for a chat prompt, every token
  the chat template added (role headers, separators), i.e. everything outside the
  messages' own text.

Nothing here imports ipywidgets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..trace import AttentionTrace
from ._common import _torch
from .huggingface import model_kind, trace

__all__ = ["GenerationTrace", "estimate_capture_bytes", "trace_generate"]

# Keyword arguments of model.generate that trace_generate sets itself (or that would make
# generate return something other than one sequence).
_RESERVED = ("input_ids", "inputs", "attention_mask", "inputs_embeds", "max_length", "output_attentions")

# Peak copies of one dense [L, H, T, T] float32 map during a capture: with gradients, the
# attention tensors and their gradients in torch, both numpy stacks, the trace's own copies and
# the per-layer transients of the backward pass; without, the tensors, one stack, one copy and
# the softmax transients. Measured on CPU (peak RSS, 4 x 8 heads, T = 1000 and 1400): 5.2-7.1
# copies with gradients, 3.7 without, besides the [T, vocab] logits (and their gradient).
_COPIES_GRAD = 7
_COPIES_NO_GRAD = 4

_EXAMPLE_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\\n{{ m['content'] }}\\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\\n{% endif %}"
)


def estimate_capture_bytes(
    n_layers: int, n_heads: int, n_tokens: int, gradients: bool = True, vocab_size: int = 0
) -> int:
    """Peak bytes a dense capture of ``[n_layers, n_heads, n_tokens, n_tokens]`` maps needs.

    An estimate from measured peaks (float32 maps: 7 copies of the maps with ``gradients``,
    4 without, plus the ``[n_tokens, vocab_size]`` logits and, with gradients, their
    gradient), used by :func:`trace_generate` to refuse a capture before allocating it.
    """
    t = int(n_tokens)
    one = 4 * int(n_layers) * int(n_heads) * t * t
    logits = 4 * t * max(0, int(vocab_size))
    if gradients:
        return _COPIES_GRAD * one + 2 * logits
    return _COPIES_NO_GRAD * one + logits


# -- argument checks ---------------------------------------------------------------------------


def _check_messages(prompt: Sequence[Any]) -> list[dict]:
    if len(prompt) == 0:
        raise ValueError("prompt: received an empty list of messages; expected at least one {'role', 'content'} dict")
    out = []
    for i, m in enumerate(prompt):
        if not isinstance(m, Mapping):
            raise TypeError(
                f"prompt[{i}]: expected a message dict {{'role': str, 'content': str}}, received {type(m).__name__}"
            )
        missing = [k for k in ("role", "content") if k not in m]
        if missing:
            raise ValueError(f"prompt[{i}]: a message needs the keys 'role' and 'content'; missing {missing}")
        role, content = m["role"], m["content"]
        if not isinstance(role, str) or not role.strip():
            raise TypeError(f"prompt[{i}]['role']: expected a non-empty string, received {role!r}")
        if not isinstance(content, str):
            raise TypeError(
                f"prompt[{i}]['content']: expected a string, received {type(content).__name__} "
                "(multimodal content lists are not supported)"
            )
        out.append(dict(m))
    return out


def _check_model(model: Any) -> None:
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"model: trace_generate needs a decoder-only causal LM; {type(model).__name__} is an "
            "encoder-decoder model: use attn_widgets.trace_seq2seq"
        )
    kind = model_kind(model)
    if kind != "causal_lm" or not callable(getattr(model, "generate", None)):
        raise ValueError(
            f"model: trace_generate needs a causal language model with .generate() "
            f"(e.g. AutoModelForCausalLM), received {type(model).__name__} (kind {kind!r})"
        )


def _check_generate_kwargs(kwargs: dict) -> dict:
    bad = sorted(k for k in kwargs if k in _RESERVED)
    if bad:
        raise TypeError(
            f"generate_kwargs: trace_generate sets {bad} itself; pass the prompt as `prompt` and "
            "the length as `max_new_tokens`"
        )
    n_ret = kwargs.get("num_return_sequences", 1)
    if n_ret != 1:
        raise ValueError(f"num_return_sequences: trace_generate captures one sequence; expected 1, received {n_ret!r}")
    if kwargs.get("return_dict_in_generate") is not None:
        raise TypeError("generate_kwargs: return_dict_in_generate is set by trace_generate; leave it out")
    return dict(kwargs)


def _max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _model_input_device(model: Any):
    torch = _torch()
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        weight = getattr(getter(), "weight", None)
        if weight is not None and weight.device.type != "meta":
            return weight.device
    dev = getattr(model, "device", None)
    return dev if dev is not None else torch.device("cpu")


# -- prompt encoding ---------------------------------------------------------------------------


def _content_spans(text: str, messages: list[dict]) -> list[tuple[int, int]] | None:
    """Character spans of each message's content in the rendered chat ``text``, in order.

    Templates copy each content verbatim (some strip it); None when one cannot be found,
    so the caller falls back to the tokenizer's own special-token mask."""
    spans, start = [], 0
    for m in messages:
        content = m["content"]
        for candidate in (content, content.strip()):
            if not candidate:
                i = start
                break
            i = text.find(candidate, start)
            if i >= 0:
                content = candidate
                break
        else:
            return None
        spans.append((i, i + len(content)))
        start = i + len(content)
    return spans


def _encode_prompt(tokenizer: Any, prompt: Any, add_generation_prompt: bool) -> tuple[list[int], np.ndarray, bool, str]:
    """(token ids, special mask, is_chat, rendered text) of the prompt."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt: received an empty string; expected text or a list of chat messages")
        enc = tokenizer(prompt, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        special = np.asarray(enc["special_tokens_mask"], dtype=bool)
        return ids, special, False, prompt
    if isinstance(prompt, (list, tuple)):
        messages = _check_messages(prompt)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"tokenizer: prompt is a chat (a list of messages) but {type(tokenizer).__name__} has no chat "
                "template (tokenizer.chat_template is None). Set one, e.g.\n"
                f"    tok.chat_template = \"{_EXAMPLE_TEMPLATE}\"\n"
                "or pass the prompt already formatted as a string."
            )
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        if not isinstance(text, str) or not text:
            raise ValueError(f"tokenizer: the chat template rendered {text!r}; expected a non-empty string")
        # The template already holds BOS etc. as text; adding them again would double them.
        fast = bool(getattr(tokenizer, "is_fast", False))
        enc = tokenizer(text, add_special_tokens=False, return_special_tokens_mask=True,
                        return_offsets_mapping=fast)
        ids = list(enc["input_ids"])
        special = np.asarray(enc["special_tokens_mask"], dtype=bool)
        if len(special) != len(ids):  # some slow tokenizers ignore the flag without special tokens added
            special = np.zeros(len(ids), dtype=bool)
        special |= np.isin(np.asarray(ids), list(getattr(tokenizer, "all_special_ids", []) or []))
        spans = _content_spans(text, messages) if fast else None
        if spans is not None:
            # A token is part of a message when it overlaps that message's own text; every
            # other token came from the template (role headers, separators): special.
            inside = np.zeros(len(ids), dtype=bool)
            for k, (a, b) in enumerate(enc["offset_mapping"]):
                inside[k] = any(a < e and s < b for s, e in spans if e > s)
            special |= ~inside
        return ids, special, True, text
    raise TypeError(
        f"prompt: expected a string or a list of {{'role', 'content'}} messages, received {type(prompt).__name__}"
    )


# -- the result ----------------------------------------------------------------------------------


class GenerationTrace:
    """A generated sequence and its attention, with every generated token as a target.

    Returned by :func:`trace_generate`. :attr:`trace` is the trace of the default target;
    :meth:`retarget` gives the trace whose gradients explain another generated token (one
    forward + backward the first time, cached by position after that, at most
    ``max_cached`` of them besides the default). ``aw.Explorer(gen)`` lists the generated
    tokens in its target picker and swaps traces when one is chosen.

    The model and tokenizer are kept for :meth:`retarget`; changing the model's weights
    afterwards makes retarget refuse (its attentions no longer match).
    """

    def __init__(self, model: Any, tokenizer: Any, token_ids: Sequence[int], special: np.ndarray,
                 prompt_length: int, default_position: int, is_chat: bool, prompt_text: str,
                 max_cached: int = 8) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.token_ids: tuple[int, ...] = tuple(int(i) for i in token_ids)
        self.prompt_length: int = int(prompt_length)
        self.is_chat: bool = bool(is_chat)
        self.prompt_text: str = prompt_text
        self._special = np.asarray(special, dtype=bool)
        self.default_position: int = int(default_position)
        if isinstance(max_cached, bool) or not isinstance(max_cached, int) or max_cached < 0:
            raise ValueError(f"max_cached: expected an int >= 0, received {max_cached!r}")
        self.max_cached = max_cached
        self._cache: OrderedDict[int, AttentionTrace] = OrderedDict()
        self._default: AttentionTrace | None = None
        generated = np.zeros(len(self.token_ids), dtype=bool)
        generated[self.prompt_length:] = True
        generated.setflags(write=False)
        self.generated = generated

    # -- sizes and names ---------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_generated(self) -> int:
        return self.n_tokens - self.prompt_length

    @property
    def generated_positions(self) -> range:
        """Positions (in the whole sequence) of the generated tokens."""
        return range(self.prompt_length, self.n_tokens)

    @property
    def trace(self) -> AttentionTrace:
        """The trace of the default target (see :func:`trace_generate`'s ``target``)."""
        assert self._default is not None
        return self._default

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.trace.tokens

    @property
    def answer(self) -> str:
        """The generated tokens decoded to text (special tokens skipped)."""
        return self._tokenizer.decode(list(self.token_ids[self.prompt_length:]), skip_special_tokens=True)

    def label(self, position: int) -> str:
        """``"#17 'cat'"``: how a target picker names the generated token at ``position``."""
        p = self._check_position(position)
        # The trace's token strings: the same display rule as every panel.
        return f"#{p} {self.trace.tokens[p]!r}"

    def target_options(self) -> list[tuple[str, int]]:
        """``(label, position)`` of every generated token, in order."""
        return [(self.label(p), p) for p in self.generated_positions]

    @property
    def cached_positions(self) -> tuple[int, ...]:
        """Positions whose trace is held now (the default first)."""
        return (self.default_position, *[p for p in self._cache if p != self.default_position])

    def _check_position(self, position: Any) -> int:
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise TypeError(f"position: expected an int (a generated token's position), received {position!r}")
        t, p0 = self.n_tokens, self.prompt_length
        p = int(position)
        if not -t <= p < t:
            raise ValueError(f"position: expected -{t} <= position < {t}, received {position}")
        p %= t
        if p < p0:
            raise ValueError(
                f"position: expected a generated token, positions {p0} .. {t - 1}; received {position}, "
                f"which is in the prompt (0 .. {p0 - 1})"
            )
        return p

    # -- captures ----------------------------------------------------------------------------
    def _capture(self, position: int, gradients: bool = True) -> AttentionTrace:
        torch = _torch()
        ids = torch.tensor([self.token_ids], dtype=torch.long)
        enc = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "special_tokens_mask": torch.as_tensor(self._special[None, :]),
        }
        # The logit the model gave the generated token, read where it was predicted (p - 1).
        tr = trace(self._model, self._tokenizer, enc, target=self.token_ids[position],
                   position=position - 1, gradients=gradients)
        # Our own fresh trace, not yet seen by anyone: its meta dict is a private copy.
        tr.meta.update(
            prompt_length=self.prompt_length, generated=self.generated, target_position=position,
            chat=self.is_chat, source="trace_generate",
        )
        return tr

    def retarget(self, position: int) -> AttentionTrace:
        """The trace whose gradients explain the generated token at ``position``.

        Same tokens and attentions as :attr:`trace`; the gradients are those of the logit
        the model gave the token at ``position``, read at ``position - 1``. Computed with
        one forward + backward the first time and cached (the same object is returned
        after that). Negative positions count from the end (-1 is the last token).
        """
        p = self._check_position(position)
        if p == self.default_position and self._default is not None and self._default.has_gradients:
            return self._default
        hit = self._cache.get(p)
        if hit is not None:
            self._cache.move_to_end(p)
            return hit
        tr = self._capture(p)
        ref = self._default
        if ref is not None and not np.allclose(tr.attentions, ref.attentions, atol=1e-3):
            raise ValueError(
                "model: its attentions on this sequence changed since trace_generate ran (were the "
                "weights or the model's mode changed?); call trace_generate again"
            )
        if self.max_cached > 0:
            self._cache[p] = tr
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return tr

    def __repr__(self) -> str:
        return (f"GenerationTrace({self.prompt_length} prompt + {self.n_generated} generated tokens, "
                f"target {self.label(self.default_position)}, answer={self.answer!r})")


# -- the entry point -----------------------------------------------------------------------------


def trace_generate(
    model: Any,
    tokenizer: Any,
    prompt: str | Sequence[Mapping[str, str]],
    max_new_tokens: int = 20,
    target: int | None = None,
    *,
    gradients: bool = True,
    add_generation_prompt: bool = True,
    max_bytes: int = 2 << 30,
    max_cached: int = 8,
    **generate_kwargs: Any,
) -> GenerationTrace:
    """Generate an answer to ``prompt``, then capture attention over prompt + answer.

    Parameters
    ----------
    model, tokenizer
        A decoder-only `transformers` causal LM (``AutoModelForCausalLM``) and its tokenizer.
        Generation runs with the model's own attention implementation; the capture switches
        to eager attention and back (see :func:`attn_widgets.trace`).
    prompt
        A string, or a chat: a list of ``{"role": str, "content": str}`` messages, formatted
        with ``tokenizer.apply_chat_template`` (``add_generation_prompt`` appends the
        assistant header). Tokens the template adds are marked special.
    max_new_tokens
        How many tokens to generate at most (>= 1); generation may stop earlier at EOS.
    target
        Which generated token the gradients explain: its position in the whole sequence
        (negative counts from the end); None is the last generated token. The target is
        the logit the model gave that token at the position that predicted it.
        Any other generated token: :meth:`GenerationTrace.retarget`.
    gradients
        False skips the backward pass of the first capture (``retarget`` still computes them).
    max_bytes
        Refuse (ValueError, before generating) when the dense capture of the longest possible
        sequence would need more than this (see :func:`estimate_capture_bytes`); use
        :func:`attn_widgets.trace_lazy` on ``gen.token_ids`` for long sequences.
    max_cached
        How many retargeted traces to keep besides the default (least recently used go first).
    **generate_kwargs
        Passed to ``model.generate``, e.g. ``do_sample=False`` for greedy (deterministic)
        decoding, ``temperature``, ``num_beams``.

    Returns
    -------
    GenerationTrace
        ``gen.trace`` is the :class:`AttentionTrace`; ``meta["prompt_length"]``,
        ``meta["generated"]`` (bool ``[T]``) and ``meta["target_position"]`` mark the
        prompt / answer boundary and the target.
    """
    torch = _torch()
    if tokenizer is None:
        raise ValueError("tokenizer: trace_generate needs the model's tokenizer")
    _check_model(model)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected an int >= 1, received {max_new_tokens!r}")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer))):
        raise TypeError(f"target: expected None or the int position of a generated token, received {target!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes <= 0:
        raise ValueError(f"max_bytes: expected a positive int, received {max_bytes!r}")
    kwargs = _check_generate_kwargs(generate_kwargs)

    ids, special, is_chat, text = _encode_prompt(tokenizer, prompt, add_generation_prompt)
    if not ids:
        raise ValueError("prompt: tokenization produced no tokens")
    p_len = len(ids)
    t_max = p_len + int(max_new_tokens)
    config = getattr(model, "config", None)
    limit = _max_positions(config)
    if limit is not None and t_max > limit:
        raise ValueError(
            f"max_new_tokens: {p_len} prompt + {max_new_tokens} new tokens = {t_max} exceeds the model's "
            f"{limit} positions; generate fewer tokens or shorten the prompt"
        )
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1
    vocab = getattr(config, "vocab_size", None) or 0
    need = estimate_capture_bytes(n_layers, n_heads, t_max, gradients, vocab)
    if need > max_bytes:
        raise ValueError(
            f"max_bytes: capturing up to {t_max} tokens densely ([{n_layers}, {n_heads}, {t_max}, {t_max}] maps"
            f"{' and gradients' if gradients else ''}) needs about {need / 2**30:.2f} GiB, over max_bytes="
            f"{max_bytes / 2**30:.2f} GiB; lower max_new_tokens, raise max_bytes, or trace the sequence "
            "with attn_widgets.trace_lazy"
        )

    device = _model_input_device(model)
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    gen_config = getattr(model, "generation_config", None)
    if "pad_token_id" not in kwargs and getattr(gen_config, "pad_token_id", None) is None:
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        if pad is not None:
            kwargs["pad_token_id"] = pad  # batch of one: never used, but generate warns without it
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             max_new_tokens=int(max_new_tokens), return_dict_in_generate=True, **kwargs)
    seq = getattr(out, "sequences", out)
    if not isinstance(seq, torch.Tensor) or seq.ndim != 2 or seq.shape[0] != 1:
        raise ValueError(f"model: generate returned {type(seq).__name__} {getattr(seq, 'shape', '')}; expected one sequence")
    full = seq[0].detach().cpu().tolist()
    if full[:p_len] != ids:
        raise ValueError("model: generate did not return the prompt as the start of the sequence")
    new = full[p_len:]
    if not new:
        raise ValueError("model: generate produced no new tokens")
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    special_all = np.concatenate([special, np.array([i in special_ids for i in new], dtype=bool)])

    gen = GenerationTrace(model, tokenizer, full, special_all, p_len, len(full) - 1, is_chat, text,
                          max_cached=max_cached)
    default = gen._check_position(len(full) - 1 if target is None else target)
    gen.default_position = default
    gen._default = gen._capture(default, gradients=gradients)
    return gen
