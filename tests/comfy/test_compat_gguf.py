"""GAG on GGUF-quantized models loaded by city96's ComfyUI-GGUF (the real pack, from
$GAG_PEER_PACKS_DIR), through ComfyUI's real samplers.

The tiny FLUX and SDXL models are written to GGUF files at test time the way the pack's tools
make them: ``tools/convert.py`` (F16, 1-D and small tensors in F32, SDXL tensors reshaped to
rows of 256 with their shape recorded) followed by the quantize step of its patched llama.cpp
(Q8_0 / Q4_0 for every F16 tensor but the input/output layers it keeps), here done with the
``gguf`` package's own quantizer. They are loaded with the pack's ``gguf_sd_loader``, its
``GGMLOps`` layers and its ``GGUFModelPatcher``; only ComfyUI's architecture detection is left
out, as it assumes full-size models.

Checked for each: GAG changes the GGUF model's sample the way it changes the unquantized
model's (direction and size), and the GGUF model given to GAG is left untouched.
"""

from __future__ import annotations

import copy

import pytest
import torch

import peer_packs
import tiny_models as tm

STEPS = 2
SIZE = 16
gguf = pytest.importorskip("gguf", reason="the gguf package is missing (tests/requirements.txt)")

# Names the pack's llama.cpp patch never quantizes (tools/lcpp.patch, "rules for image models").
KEEP_UNQUANTIZED = {
    "flux": ("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."),
    "sdxl": ("class_embedding.", "time_embedding.", "add_embedding.", "time_embed.",
             "label_emb.", "conv_in.", "conv_out.", "input_blocks.0.0.weight", "out.2.weight"),
}
SHAPE_FIX = {"flux": False, "sdxl": True}   # tools/convert.py: ModelFlux / ModelSDXL


def write_gguf(path, state_dict: dict, arch: str, qtype_name: str) -> dict:
    """Write ``state_dict`` as ComfyUI-GGUF's convert + quantize steps would; returns
    {tensor type name: count}."""
    Q = gguf.GGMLQuantizationType
    qtype = getattr(Q, qtype_name)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    counts: dict = {}
    for key, tensor in state_dict.items():
        data = tensor.detach().to(torch.float32).numpy()
        n_params = data.size
        # tools/convert.py
        data_type = Q.F16
        if data.ndim == 1 or n_params <= 1024:
            data_type = Q.F32
        if (SHAPE_FIX[arch] and data.ndim > 1 and n_params >= 512 and n_params % 256 == 0
                and data.shape[-1] % 256 != 0):
            writer.add_array(f"comfy.gguf.orig_shape.{key}", tuple(int(d) for d in data.shape))
            data = data.reshape(n_params // 256, 256)
        # the quantize step: F16 tensors become qtype, but for the kept layers
        if (data_type == Q.F16 and not any(name in key for name in KEEP_UNQUANTIZED[arch])
                and data.shape[-1] % block == 0):
            data_type = qtype
        writer.add_tensor(key, gguf.quants.quantize(data, data_type), raw_dtype=data_type)
        counts[data_type.name] = counts.get(data_type.name, 0) + 1
    writer.write_header_to_file(path=str(path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def load_gguf(path, like):
    """A model loaded from ``path`` by ComfyUI-GGUF's loader, ops and patcher, with the
    architecture of the tiny model ``like``."""
    import comfy.model_patcher
    loader = peer_packs.import_pack_module("ComfyUI-GGUF", "loader")
    ops = peer_packs.import_pack_module("ComfyUI-GGUF", "ops")
    nodes = peer_packs.import_pack_module("ComfyUI-GGUF", "nodes")
    state_dict = loader.gguf_sd_loader(str(path))
    # A fresh config of the same architecture (model configs do not deep-copy on every
    # ComfyUI); BASE.__init__ may reset keys the tiny builders set, so they are put back.
    like_config = like.model.model_config
    config = type(like_config)(dict(like_config.unet_config))
    config.unet_config.update(like_config.unet_config)
    config.set_inference_dtype(torch.float32, None)
    config.custom_operations = ops.GGMLOps()
    model = config.get_model({}, device="cpu")
    model.load_model_weights(state_dict, "")
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    return nodes.GGUFModelPatcher.clone(patcher)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def gguf_weights(patcher) -> dict:
    """name → (a copy of the stored data, its GGML type)."""
    return {name: (p.detach().clone().as_subclass(torch.Tensor), getattr(p, "tensor_type", None))
            for name, p in patcher.model.diffusion_model.named_parameters()}


FAMILIES = {
    # arch → (tiny_models builder, conditioning, sample, GAG settings per case)
    "flux": ("tiny_flux", tm.flux_conditioning,
             lambda p, pos, neg: tm.sample_dit(p, pos, neg, steps=STEPS, cfg=1.0, size=SIZE),
             ({"mode": "text"}, {"mode": "joint"})),
    "sdxl": ("tiny_sdxl", tm.sdxl_conditioning,
             lambda p, pos, neg: tm.sample(p, pos, neg, steps=STEPS, cfg=5.0, size=SIZE),
             ({},)),
}
# Lowest cosine between GAG's change on the GGUF model and on the F32 model. Q4_0 keeps 4 bits
# of random weights (no trained structure to preserve), so its bound is looser.
MIN_COSINE = {"Q8_0": 0.95, "Q4_0": 0.8}


@pytest.fixture(scope="module")
def gag(pack):
    import importlib
    return importlib.import_module(f"{pack.__name__}.nodes.api")


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
@pytest.mark.parametrize("arch", ["flux", "sdxl"])
def test_gag_on_gguf_model_acts_as_on_the_unquantized_model(gag, tmp_path, arch, qtype):
    build, conditioning, sample, cases = FAMILIES[arch]
    reference = getattr(tm, build)()
    counts = write_gguf(tmp_path / f"tiny_{arch}_{qtype}.gguf",
                        reference.model.diffusion_model.state_dict(), arch, qtype)
    assert counts.get(qtype, 0) >= 8, f"too few tensors quantized: {counts}"
    quantized = load_gguf(tmp_path / f"tiny_{arch}_{qtype}.gguf", reference)
    assert any(tensor_type == getattr(gguf.GGMLQuantizationType, qtype)
               for _, tensor_type in gguf_weights(quantized).values()), \
        "the pack did not load quantized weights"
    pos, neg = conditioning(seed=1), conditioning(seed=2)

    plain_f32 = sample(reference, pos, neg)
    plain_q = sample(quantized, pos, neg)
    assert torch.isfinite(plain_q).all()
    assert cosine(plain_q, plain_f32) > 0.9, "the GGUF model is not the tiny model quantized"
    weights_before = gguf_weights(quantized)
    options_before = copy.copy(quantized.model_options)

    for settings in cases:
        change_f32 = sample(gag.apply_gag(reference, **settings), pos, neg) - plain_f32
        guided = gag.apply_gag(quantized, **settings)
        assert type(guided) is type(quantized), "GAG's clone is no longer a GGUFModelPatcher"
        change_q = sample(guided, pos, neg) - plain_q
        what = f"{arch} {qtype} {settings}"
        assert change_f32.abs().max() > 1e-4 * plain_f32.abs().max(), f"{what}: no GAG effect"
        assert cosine(change_q, change_f32) > MIN_COSINE[qtype], \
            f"{what}: GAG's change differs in direction ({cosine(change_q, change_f32):.3f})"
        ratio = float(change_q.norm() / change_f32.norm())
        assert 0.5 < ratio < 2.0, f"{what}: GAG's change differs in size (×{ratio:.2f})"

    # The GGUF model itself is untouched: same weights (still quantized), same options, same
    # sample as before GAG was applied to it.
    for key, (weight, tensor_type) in gguf_weights(quantized).items():
        assert tensor_type == weights_before[key][1], f"{key} changed type"
        assert torch.equal(weight, weights_before[key][0]), f"{key} changed"
    assert quantized.model_options == options_before
    assert torch.equal(sample(quantized, pos, neg), plain_q)
