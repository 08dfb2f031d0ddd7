"""Flux-architecture DiTs (Flux.1, Flux Kontext, Flux.2, and ComfyUI's Flux class): double- and single-stream blocks
re-expressed from their own submodules (ComfyUI ``comfy/ldm/flux/layers.py``), so attention and MLP can be cached
and pruned separately.

Double block (text and image streams, joint attention)::

    attn:  D_a = proj(Attn(qkv(mod1(norm1(x)))))        x <- x + gate1 * D_a
    mlp:   D_m = mlp(mod2(norm2(x)))                     x <- x + gate2 * D_m

Single block (one joint stream, fused linears)::

    out = linear2([Attn(qkv) , act(mlp_in)]),  [qkv, mlp_in] = linear1(mod(pre_norm(x)))      x <- x + gate * out
    attn:  D_a = linear2[:, :h] Attn(qkv)        mlp:  D_m = out - D_a  (= linear2[:, h:] act(mlp_in) + bias)

With both modules computed the fused path is kept, so the output is bit-exact; the split costs one extra
``h x h`` product per token, paid only on anchor steps whose outputs are cached (``record``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..flops import attention_flops, linear_flops
from ..tokens import TokenLayout, gather_tokens
from .base import BlockStep, ModelAdapter, ModuleCosts


Tensor = torch.Tensor


def _qkv(attn: Any, x: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Flux ``SelfAttention`` projections: (B, N, C) -> 3 x (B, H, N, D), q and k normalised."""
    qkv = attn.qkv(x)  # (B, N, 3C)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.norm(q, k, v)
    return q, k, v


def _heads(t: Tensor, heads: int) -> Tensor:
    """(B, N, C) -> (B, H, N, D)"""
    return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def _partial_attention(
    step: BlockStep, q: Tensor, k: Tensor, v: Tensor, pe: Tensor | None, positions: Tensor, args: dict[str, Any]
) -> Tensor:
    """Selected queries attend to the keys and values of every current token. q: (B, H, n, D), k, v: (B, H, N, D),
    positions (B, n) -> (B, n, H*D). Rope is applied with each query's own position."""
    if pe is not None:  # (B or 1, 1, N, D/2, 2, 2)
        rows, trailing = q.shape[0], (1,) * (pe.dim() - 3)
        index = positions.reshape(rows, 1, -1, *trailing).expand(-1, pe.shape[1], -1, *pe.shape[3:])
        q = step.ops["apply_rope1"](q, pe.expand(rows, *pe.shape[1:]).gather(2, index))  # each query's own rope
        k = step.ops["apply_rope1"](k, pe)
    mask = args.get("attn_mask")
    if mask is not None:  # broadcastable to (B, H, N, N): keep each row's query rows
        heads = mask.shape[-3] if mask.dim() >= 3 else 1
        full = mask.expand(q.shape[0], heads, *mask.shape[-2:])  # (B, H or 1, N, N)
        mask = full.gather(2, positions[:, None, :, None].expand(-1, heads, -1, full.shape[-1]))
    attention = step.ops["optimized_attention"]
    return attention(  # type: ignore[no-any-return]
        q, k, v, q.shape[1], skip_reshape=True, mask=mask, transformer_options=args.get("transformer_options", {})
    )


def _attention_costs(batch: int, n: int, h: int, heads: int, fixed_rows: int, image: int) -> tuple[int, int, int]:
    """(full, fixed, per_ratio) FLOPs of a Flux attention module: qkv, scores, output projection. A partial call
    projects keys and values of all ``n`` tokens, queries and outputs of the recomputed ones only."""

    def rows(q: int) -> int:
        return (
            linear_flops(batch * q, h, h)
            + attention_flops(batch * heads, q, n, h // heads)
            + linear_flops(batch * q, h, h)
        )

    full = linear_flops(batch * n, h, 2 * h) + rows(n)
    fixed = linear_flops(batch * n, h, 2 * h) + rows(fixed_rows)
    return full, fixed, rows(image)


class FluxDoubleBlock:
    kind: str = "double_block"
    modules: tuple[str, ...] = ("attn", "mlp")

    def run(self, block: Any, args: dict[str, Any], step: BlockStep) -> dict[str, Tensor]:
        img, txt, vec, pe = args["img"], args["txt"], args["vec"], args["pe"]
        options = args.get("transformer_options", {})
        apply_mod = step.ops["apply_mod"]
        if block.modulation:
            img_mod1, img_mod2 = block.img_mod(vec)
            txt_mod1, txt_mod2 = block.txt_mod(vec)
        else:
            (img_mod1, img_mod2), (txt_mod1, txt_mod2) = vec
        n_txt, heads = txt.shape[1], block.num_heads

        def attn_inputs() -> tuple[Tensor, Tensor]:
            return (
                apply_mod(block.txt_norm1(txt), (1 + txt_mod1.scale), txt_mod1.shift, None),  # (B, N_t, C)
                apply_mod(block.img_norm1(img), (1 + img_mod1.scale), img_mod1.shift, None),  # (B, N_s, C)
            )

        def attn_full(x: Sequence[Tensor]) -> Tensor:
            img_q, img_k, img_v = _qkv(block.img_attn, x[1], heads)
            txt_q, txt_k, txt_v = _qkv(block.txt_attn, x[0], heads)
            first = (img_q, img_k, img_v) if block.flipped_img_txt else (txt_q, txt_k, txt_v)
            second = (txt_q, txt_k, txt_v) if block.flipped_img_txt else (img_q, img_k, img_v)
            q, k, v = (torch.cat((a, b), dim=2) for a, b in zip(first, second, strict=True))
            attn = step.ops["attention"](q, k, v, pe=pe, mask=args.get("attn_mask"), transformer_options=options)
            if block.flipped_img_txt:
                img_attn, txt_attn = attn[:, : img.shape[1]], attn[:, img.shape[1] :]
            else:
                txt_attn, img_attn = attn[:, :n_txt], attn[:, n_txt:]
            return torch.cat((block.txt_attn.proj(txt_attn), block.img_attn.proj(img_attn)), 1)  # (B, N, C)

        def attn_partial(x: Sequence[Tensor], positions: Tensor) -> Tensor:
            if block.flipped_img_txt:
                raise NotImplementedError("SODA partial attention is not available for image-first Flux blocks.")
            img_pos = positions[:, n_txt:] - n_txt  # (B, n - N_t): every text token is recomputed
            txt_q, txt_k, txt_v = _qkv(block.txt_attn, x[0], heads)
            w, b = step.ops["linear_weights"](block.img_attn.qkv, x[1])
            c = w.shape[1]
            img_q = _heads(F.linear(gather_tokens(x[1], img_pos), w[:c], None if b is None else b[:c]), heads)
            img_k, img_v = (_heads(t, heads) for t in F.linear(x[1], w[c:], None if b is None else b[c:]).chunk(2, -1))
            img_q, img_k = block.img_attn.norm(img_q, img_k, img_v)
            q = torch.cat((txt_q, img_q), dim=2)  # (B, H, n, D)
            k, v = torch.cat((txt_k, img_k), dim=2), torch.cat((txt_v, img_v), dim=2)  # (B, H, N, D)
            attn = _partial_attention(step, q, k, v, pe, positions, args)  # (B, n, C)
            return torch.cat((block.txt_attn.proj(attn[:, :n_txt]), block.img_attn.proj(attn[:, n_txt:])), 1)

        d_attn = step.module("attn", attn_inputs, attn_full, attn_partial)  # (B, N, C)
        img = img + apply_mod(d_attn[:, n_txt:], img_mod1.gate, None, None)
        txt = txt + apply_mod(d_attn[:, :n_txt], txt_mod1.gate, None, None)

        def mlp_inputs() -> tuple[Tensor, Tensor]:
            return (
                apply_mod(block.txt_norm2(txt), (1 + txt_mod2.scale), txt_mod2.shift, None),
                apply_mod(block.img_norm2(img), (1 + img_mod2.scale), img_mod2.shift, None),
            )

        def mlp_full(x: Sequence[Tensor]) -> Tensor:
            return torch.cat((block.txt_mlp(x[0]), block.img_mlp(x[1])), 1)  # (B, N, C)

        def mlp_partial(x: Sequence[Tensor], positions: Tensor) -> Tensor:
            img_pos = positions[:, n_txt:] - n_txt  # (B, n - N_t): every text token is recomputed
            return torch.cat((block.txt_mlp(x[0]), block.img_mlp(gather_tokens(x[1], img_pos))), 1)  # (B, n, C)

        d_mlp = step.module("mlp", mlp_inputs, mlp_full, mlp_partial)  # (B, N, C)
        img = img + apply_mod(d_mlp[:, n_txt:], img_mod2.gate, None, None)
        txt = txt + apply_mod(d_mlp[:, :n_txt], txt_mod2.gate, None, None)
        if txt.dtype == torch.float16:
            txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
        return {"img": img, "txt": txt}

    def costs(self, block: Any, args: dict[str, Any], tokens: TokenLayout) -> ModuleCosts:
        batch, n, h = args["img"].shape[0], tokens.total, block.hidden_size
        heads, fixed_rows = block.num_heads, tokens.total - tokens.image
        mlp_in, mlp_out = block.img_mlp[0].weight.shape[0], block.img_mlp[2].weight.shape[1]

        attn = _attention_costs(batch, n, h, heads, fixed_rows, tokens.image)

        def mlp(rows: int) -> int:
            return linear_flops(batch * rows, h, mlp_in) + linear_flops(batch * rows, mlp_out, h)

        modulation = 2 * linear_flops(batch, h, 6 * h) if block.modulation else 0
        return ModuleCosts(
            full={"attn": attn[0], "mlp": mlp(n)},
            fixed={"attn": attn[1], "mlp": mlp(fixed_rows)},
            per_ratio={"attn": attn[2], "mlp": mlp(tokens.image)},
            base=modulation,
            record=0,
        )


class FluxSingleBlock:
    kind: str = "single_block"
    modules: tuple[str, ...] = ("attn", "mlp")

    def run(self, block: Any, args: dict[str, Any], step: BlockStep) -> dict[str, Tensor]:
        x, vec, pe = args["img"], args["vec"], args["pe"]  # x: (B, N, C), text tokens first
        options = args.get("transformer_options", {})
        mod = block.modulation(vec)[0] if block.modulation else vec
        h, heads = block.hidden_size, block.num_heads

        @functools.cache
        def x_mod() -> Tensor:  # (B, N, C); not needed at all when both modules are reused
            return step.ops["apply_mod"](block.pre_norm(x), (1 + mod.scale), mod.shift, None)  # type: ignore[no-any-return]

        @functools.cache
        def weights() -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
            w1, b1 = step.ops["linear_weights"](block.linear1, x_mod())  # (3C + M1, C): [q; k; v; mlp_in]
            w2, b2 = step.ops["linear_weights"](block.linear2, x_mod())  # (C, C + M2): [attn | mlp]
            return w1, b1, w2, b2

        def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            q, k = block.norm(q, k, v)
            return step.ops["attention"](q, k, v, pe=pe, mask=args.get("attn_mask"), transformer_options=options)  # type: ignore[no-any-return]

        def attn_full(inputs: Sequence[Tensor]) -> Tensor:
            w1, b1, w2, _ = weights()
            qkv = F.linear(inputs[0], w1[: 3 * h], None if b1 is None else b1[: 3 * h])  # (B, N, 3C)
            q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
            return F.linear(attention(q, k, v), w2[:, :h])  # (B, N, C)

        def attn_partial(inputs: Sequence[Tensor], positions: Tensor) -> Tensor:
            w1, b1, w2, _ = weights()
            kv = F.linear(inputs[0], w1[h : 3 * h], None if b1 is None else b1[h : 3 * h])  # (B, N, 2C)
            k, v = (_heads(t, heads) for t in kv.chunk(2, -1))
            q = _heads(F.linear(gather_tokens(inputs[0], positions), w1[:h], None if b1 is None else b1[:h]), heads)
            q, k = block.norm(q, k, v)
            return F.linear(_partial_attention(step, q, k, v, pe, positions, args), w2[:, :h])  # (B, n, C)

        def mlp(rows: Tensor) -> Tensor:
            w1, b1, w2, b2 = weights()
            hidden = F.linear(rows, w1[3 * h :], None if b1 is None else b1[3 * h :])  # (B, n, M1)
            return F.linear(block.mlp_act(hidden), w2[:, h:], b2)  # (B, n, C)

        if step.ratios["attn"] >= 1.0 and step.ratios["mlp"] >= 1.0:
            out, attn = self._fused(block, x_mod(), attention)
            if step.record or step.observe is not None:
                self._split(step, out, F.linear(attn, weights()[2][:, :h]), x_mod())
        else:
            d_attn = step.module("attn", lambda: (x_mod(),), attn_full, attn_partial)
            d_mlp = step.module(
                "mlp", lambda: (x_mod(),), lambda i: mlp(i[0]), lambda i, p: mlp(gather_tokens(i[0], p))
            )
            out = d_attn + d_mlp
        x = x + step.ops["apply_mod"](out, mod.gate, None, None)
        if x.dtype == torch.float16:
            x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
        return {"img": x}

    @staticmethod
    def _fused(block: Any, x_mod: Tensor, attention: Any) -> tuple[Tensor, Tensor]:
        """The block's own computation order: one linear1, attention, one linear2 (bit-exact).
        Returns the pre-gate output and the attention output (B, N, C) it was made from."""
        qkv, mlp = torch.split(block.linear1(x_mod), [3 * block.hidden_size, block.mlp_hidden_dim_first], dim=-1)
        q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = attention(q, k, v)  # (B, N, C)
        return block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2)), attn

    @staticmethod
    def _split(step: BlockStep, out: Tensor, d_attn: Tensor, x_mod: Tensor) -> None:
        """Cache / observe the two modules of a fused full call: D_a = linear2[:, :h] attn, D_m = out - D_a."""
        parts = {"attn": d_attn, "mlp": out - d_attn}
        scores = step.scores((x_mod,)) if step.observe is not None else None
        for name, value in parts.items():
            if step.record:
                step.cache[name] = value
            if step.observe is not None and scores is not None:
                step.observe(name, value, scores)

    def costs(self, block: Any, args: dict[str, Any], tokens: TokenLayout) -> ModuleCosts:
        batch, n, h = args["img"].shape[0], tokens.total, block.hidden_size
        m_in, m_out, fixed_rows = block.mlp_hidden_dim_first, block.mlp_hidden_dim, tokens.total - tokens.image
        attn = _attention_costs(batch, n, h, block.num_heads, fixed_rows, tokens.image)

        def mlp(rows: int) -> int:
            return linear_flops(batch * rows, h, m_in) + linear_flops(batch * rows, m_out, h)

        return ModuleCosts(
            full={"attn": attn[0], "mlp": mlp(n)},
            fixed={"attn": attn[1], "mlp": mlp(fixed_rows)},
            per_ratio={"attn": attn[2], "mlp": mlp(tokens.image)},
            base=linear_flops(batch, h, 3 * h) if block.modulation is not None else 0,
            record=linear_flops(batch * n, h, h),
        )


FLUX = ModelAdapter(
    name="flux",
    model_classes=("comfy.ldm.flux.model.Flux",),
    block_lists=(("double_blocks", "double_block"), ("single_blocks", "single_block")),
    programs={"double_block": FluxDoubleBlock(), "single_block": FluxSingleBlock()},
    modules=("attn", "mlp"),
    streams={"double_block": ("txt", "img"), "single_block": ("img",)},
    functions={
        "attention": "comfy.ldm.flux.math.attention",
        "apply_mod": "comfy.ldm.flux.layers.apply_mod",
        "apply_rope1": "comfy.ldm.flux.math.apply_rope1",
        "optimized_attention": "comfy.ldm.flux.math.optimized_attention",
        "linear_weights": "comfy.ops.cast_bias_weight",
    },
    known_block_sources={
        # ComfyUI 0.3.75
        "comfy.ldm.flux.layers.DoubleStreamBlock": frozenset(
            {"03e57d251ab49a6edefb0400e20142c1170bf55a96c26429a99dfc8457a186f7"}
        ),
        "comfy.ldm.flux.layers.SingleStreamBlock": frozenset(
            {"3f63422de8eab06336ff31b8ee82b9ebbb3ab7ad870555b5b907e4808d1a19ad"}
        ),
    },
    token_rows={"img_in": "image", "txt_in": "text", "final_layer.linear": "image"},
)
