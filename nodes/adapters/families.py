"""The model families GAG supports, as data: one ``Family`` entry per family.

An entry says how the family is recognised (its diffusion-model class in ComfyUI and, where two
families share a class, the config values that tell them apart), which block groups it has and
how ComfyUI names them (the attribute holding the blocks, the ``block_type`` ComfyUI tells
attention, the ``dit`` replace key), where the text tokens sit, its presets and modes, and the
layouts of its released full-size models for the front end's layer map.

Data only: this module imports no hook. Each entry names its hook ("unet" or "joint"); the
package's ``HOOKS`` (nodes/adapters/__init__.py) maps that name to the hook module. The front end
reads the table through ``front_end_table()``, served at ``/gag/families``. Adding a family is
adding an entry here (most specific first: the first entry that matches a model wins) and its
tiny-model test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Optional


__all__ = ["BlockGroup", "Layout", "TextLength", "Family", "FAMILIES", "find_family",
           "family_class", "family_by_id", "all_presets", "model_name", "diffusion_model_of",
           "front_end_table"]


@dataclass(frozen=True)
class BlockGroup:
    """One kind of block of a DiT, as users name it in a layer selection.

    blocks: attribute of the diffusion model that lists these blocks, in model order.
    block_type: the ``transformer_options["block_type"]`` ComfyUI sets while these blocks run
        (0.33+ for the families that have it); None where ComfyUI never says.
    dit_replace: the ``dit`` block-replace key ComfyUI offers for these blocks, if any.
    separate_text: the block's replace arguments carry ``txt`` and ``img`` apart ("double
        stream"); False for single-stream blocks that see one joint sequence.
    skip: attribute listing block indices the model never runs (not offered as layers).
    text_arg: the ``dit`` replace argument holding exactly the text tokens of the block's
        guided attention (double stream); None where it holds more than the text (Wan I2V puts
        its CLIP image tokens in front), so the model call's text length is used instead.
        Where the replace's ``img`` is a tuple of streams (LTX-2: video, audio), the first is
        the one guided.
    """
    name: str
    blocks: str
    block_type: Optional[str]
    dit_replace: Optional[str]
    separate_text: bool = True
    skip: Optional[str] = None
    text_arg: Optional[str] = "txt"


@dataclass(frozen=True)
class TextLength:
    """How many text tokens the attention of one model call holds, from the inputs of the
    diffusion model (read by the DiT hook's model-call wrapper, ``model_call``, for the blocks
    ComfyUI gives no ``img_slice``).

    The text context (``context``, (B, T, C)) gives T tokens. Then:
    extra: (input name, token axis, times) for each input whose tokens join the text in
        attention; an absent input adds nothing. HunyuanImage 2.1 appends its byT5 glyph tokens
        (``txt_byt5`` (B, G, C): G); HiDream adds its Llama-3 hidden states twice, the last
        layer's and each block's own layer's (``encoder_hidden_states_llama3`` (B, layers, Tl,
        C): 2·Tl).
    padded_to: attribute of the diffusion model holding the multiple the model pads the text to
        before attention (Z-Image: ``pad_tokens_multiple`` = 32); None or a missing attribute:
        no padding. The pad tokens count as text (see the Z-Image entry).
    """
    extra: tuple[tuple[str, int, int], ...] = ()
    padded_to: Optional[str] = None

    def tokens(self, diffusion_model, inputs: dict) -> Optional[int]:
        """The text tokens of this model call, or None without a (B, T, C) context."""
        context = inputs.get("context")
        if getattr(context, "dim", lambda: 0)() != 3:
            return None
        total = int(context.shape[1])
        for name, axis, times in self.extra:
            value = inputs.get(name)
            if hasattr(value, "shape"):
                total += times * int(value.shape[axis])
        multiple = getattr(diffusion_model, self.padded_to, None) if self.padded_to else None
        if multiple:
            total = -(-total // int(multiple)) * int(multiple)
        return total


@dataclass(frozen=True)
class Layout:
    """A released full-size model of a family, for the layer map (the GAG Layers node has no
    model input, so the map draws these layouts).

    blocks: group → number of blocks. transformers: UNet only, group → {block: number of
    transformers with cross-attention}; DiT blocks hold one attention each.
    """
    id: str
    label: str
    models: str
    blocks: dict[str, int]
    transformers: dict[str, dict[int, int]] = field(default_factory=dict)
    file_hint: str = ""   # regular expression on a model file name that suggests this layout


@dataclass(frozen=True)
class Family:
    """One family of diffusion models.

    model_class: (module, class) of its diffusion model in ComfyUI; a family whose class the
        running ComfyUI lacks is never matched.
    flags: dotted attribute path on the diffusion model → whether it must be truthy (a missing
        attribute reads as False), to tell apart families that share a class; a value other
        than True/False must be equal (Wan 2.2 TI2V 5B: ``out_dim`` 48).
    hook: "unet" or "joint" (``nodes.adapters.HOOKS``: the UNet attn2 hook or the DiT hook).
    text: where the text tokens are: "cross" (a separate cross-attention whose keys are the
        text), "first" or "last" (at the start or the end of the joint sequence).
    text_length: how many text tokens a model call's attention holds (joint hook).
    modes: the first one is what "auto" picks.
    all_blocks_only: every attention call of the diffusion model is the joint attention of one
        of its blocks, and ComfyUI tells attention neither its block nor offers ``dit``
        replaces: GAG can guide all blocks together (every attention call) or none.
    refused: why GAG refuses this family (a recognised model it cannot guide); empty when it
        is supported.
    min_comfyui: the oldest ComfyUI release GAG is tested to guide this family on (the CI runs
        0.3.64 and 0.33.0; an older release lacks the family's class or the block info its hook
        reads). For the docs (README's supported-models table, the help pages); detection
        itself feature-checks the running ComfyUI.
    """
    id: str
    display_name: str
    model_class: tuple[str, str]
    hook: str
    text: str
    presets: dict[str, str]
    modes: tuple[str, ...]
    layouts: tuple[Layout, ...]
    groups: tuple[BlockGroup, ...] = ()
    flags: dict[str, object] = field(default_factory=dict)
    text_length: TextLength = TextLength()
    all_blocks_only: bool = False
    refused: str = ""
    min_comfyui: str = "0.3.64"

    def group(self, name: str) -> BlockGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def resolve_mode(self, mode: str) -> str:
        if mode == "auto":
            return self.modes[0]
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} does not apply to {self.display_name} models; "
                             f"valid modes: auto, {', '.join(self.modes)}")
        return mode


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

UNET_PRESETS = {
    "paper": "input, output",   # PLADIS's and the GAG re-implementations' choice
    "all": "all",
    "input": "input",
    "output": "output",
    "middle": "middle",
}
# Every joint attention holds the image-query → text-key retrieval, the DiT analogue of "all
# cross-attention layers" in PLADIS; README has the measurements behind the modes.
FLUX_PRESETS = {"paper": "double, single", "all": "all", "double": "double", "single": "single"}
JOINT_PRESETS = {"paper": "joint", "all": "all", "joint": "joint"}
SINGLE_PRESETS = {"paper": "single", "all": "all", "single": "single"}
DIT_MODES = ("text", "joint")

NEXTDIT_GROUPS = (BlockGroup("joint", "layers", "double", None),)
FLUX_GROUPS = (
    BlockGroup("double", "double_blocks", "double", "double_block"),
    BlockGroup("single", "single_blocks", "single", "single_block", separate_text=False),
)
FLUX_MODEL = ("comfy.ldm.flux.model", "Flux")
CHROMA_GROUPS = (
    BlockGroup("double", "double_blocks", "double", "double_block", skip="skip_mmdit"),
    BlockGroup("single", "single_blocks", "single", "single_block", separate_text=False,
               skip="skip_dit"),
)

# Video families whose text is a separate cross-attention in every block: "paper" guides the
# text cross-attention of every block, as PLADIS's "all cross-attention layers".
CROSS_PRESETS = {"paper": "blocks", "all": "all", "blocks": "blocks"}
WAN_GROUPS = (BlockGroup("blocks", "blocks", "double", "double_block", text_arg=None),)
# Wan siblings that run attention of extra blocks or branches while ComfyUI's block_index still
# names a main block (VACE's vace_blocks after block i; Wan-Animate-2's pose branch before block
# i's generation pass): block info cannot tell those calls from the main block's own, so GAG
# marks the main blocks through their `dit` replaces instead (block_type None; as every Wan on
# 0.3.64). Only the main block runs with the marked options; the extra attention never sees
# the mark and stays unguided.
WAN_MARKED_GROUPS = (BlockGroup("blocks", "blocks", None, "double_block", text_arg=None),)

FAMILIES: tuple[Family, ...] = (
    Family(
        id="unet", display_name="SD1.5 / SDXL UNet",
        model_class=("comfy.ldm.modules.diffusionmodules.openaimodel", "UNetModel"),
        hook="unet", text="cross", presets=UNET_PRESETS, modes=("text",),
        layouts=(
            Layout("sdxl", "SDXL", "SDXL, Pony, Illustrious, Hyper-SDXL, DMD2",
                   blocks={"input": 9, "middle": 1, "output": 9},
                   transformers={"input": {4: 2, 5: 2, 7: 10, 8: 10}, "middle": {0: 10},
                                 "output": {0: 10, 1: 10, 2: 10, 3: 2, 4: 2, 5: 2}},
                   file_hint=r"xl|pony|illustrious|noob|dmd2|playground"),
            Layout("sd15", "SD1.5", "SD1.5, SD2.x",
                   blocks={"input": 12, "middle": 1, "output": 12},
                   transformers={"input": {1: 1, 2: 1, 4: 1, 5: 1, 7: 1, 8: 1}, "middle": {0: 1},
                                 "output": {i: 1 for i in range(3, 12)}},
                   file_hint=r"v1[-_.]?5|sd[-_]?1[-_.]?5|sd15|v2[-_.]?[01]|sd[-_]?2[-_.]?[01]|sd2"),
        ),
    ),
    Family(
        # Chroma in pixel space (a NeRF head decodes patches; no attention there): Chroma's
        # blocks, block info and replaces. Before Chroma, whose class it subclasses.
        id="chroma_radiance", display_name="Chroma Radiance", min_comfyui="0.33.0",
        model_class=("comfy.ldm.chroma_radiance.model", "ChromaRadiance"),
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES, groups=CHROMA_GROUPS,
        layouts=(Layout("chroma_radiance", "Radiance", "Chroma1 Radiance",
                        blocks={"double": 19, "single": 38}, file_hint=r"radiance"),),
    ),
    Family(
        # Chroma before FLUX: some ComfyUI versions build Chroma on FLUX's classes.
        id="chroma", display_name="Chroma",
        model_class=("comfy.ldm.chroma.model", "Chroma"),
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES, groups=CHROMA_GROUPS,
        layouts=(Layout("chroma", "Chroma", "Chroma", blocks={"double": 19, "single": 38},
                        file_hint=r"chroma"),),
    ),
    Family(
        # FLUX.2 runs on FLUX.1's class with modulation shared across blocks.
        id="flux2", display_name="FLUX.2", min_comfyui="0.33.0", model_class=FLUX_MODEL,
        flags={"params.global_modulation": True},
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES, groups=FLUX_GROUPS,
        layouts=(
            Layout("flux2", "FLUX.2", "FLUX.2 dev", blocks={"double": 8, "single": 48},
                   file_hint=r"flux[-_. ]?2(?!.*klein)"),
            Layout("flux2_klein_4b", "Klein 4B", "FLUX.2 klein 4B",
                   blocks={"double": 5, "single": 20}, file_hint=r"klein.*4b|klein(?!.*9b)"),
            Layout("flux2_klein_9b", "Klein 9B", "FLUX.2 klein 9B",
                   blocks={"double": 8, "single": 24}, file_hint=r"klein.*9b"),
        ),
    ),
    Family(
        # LongCat-Image is FLUX.1's architecture with Qwen2.5-VL text on 2-D text positions
        # (txt_ids_dims [1, 2]; FLUX.1 has none). Ovis shares those positions but has yak MLPs.
        id="longcat_image", display_name="LongCat-Image", min_comfyui="0.33.0",
        model_class=FLUX_MODEL,
        flags={"params.global_modulation": False, "params.txt_ids_dims": True,
               "params.yak_mlp": False},
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES, groups=FLUX_GROUPS,
        layouts=(Layout("longcat_image", "LongCat", "LongCat-Image",
                        blocks={"double": 19, "single": 38}, file_hint=r"longcat"),),
    ),
    Family(
        # One sequence [text | image | reference images]; ComfyUI marks the blocks "single"
        # with img_slice. Its text-fusion blocks (across encoder layers, then over the text)
        # run first, unmarked, and hold no image query: not offered.
        id="krea2", display_name="Krea2", min_comfyui="0.33.0",
        model_class=("comfy.ldm.krea2.model", "SingleStreamDiT"),
        hook="joint", text="first", presets=SINGLE_PRESETS, modes=DIT_MODES,
        groups=(BlockGroup("single", "blocks", "single", None, separate_text=False),),
        layouts=(Layout("krea2", "Krea2", "Krea2, Krea2 Turbo", blocks={"single": 28},
                        file_hint=r"krea[-_ ]?2"),),
    ),
    Family(
        id="flux", display_name="FLUX.1", model_class=FLUX_MODEL,
        flags={"params.global_modulation": False},
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES, groups=FLUX_GROUPS,
        layouts=(Layout("flux", "FLUX.1", "FLUX.1 dev / schnell / Kontext / Krea",
                        blocks={"double": 19, "single": 38}, file_hint=r"flux|krea|kontext"),),
    ),
    Family(
        # ComfyUI keys SD3's joint blocks as "double_block" replaces and never sets block_type.
        id="sd3", display_name="SD3 / SD3.5 MMDiT",
        model_class=("comfy.ldm.modules.diffusionmodules.mmdit", "MMDiT"),
        hook="joint", text="first", presets=JOINT_PRESETS, modes=DIT_MODES,
        groups=(BlockGroup("joint", "joint_blocks", None, "double_block"),),
        layouts=(
            Layout("sd35_large", "SD3.5 L", "SD3.5 large, large turbo", blocks={"joint": 38},
                   file_hint=r"(sd|stable[-_ ]?diffusion)[-_ ]?3[-_.]?5[-_ ]?large"),
            Layout("sd3", "SD3", "SD3 medium, SD3.5 medium", blocks={"joint": 24},
                   file_hint=r"sd3|sd_3|stable[-_ ]?diffusion[-_ ]?3"),
        ),
    ),
    Family(
        id="qwen_image", display_name="Qwen-Image",
        model_class=("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"),
        hook="joint", text="first", presets=JOINT_PRESETS, modes=DIT_MODES,
        groups=(BlockGroup("joint", "transformer_blocks", "double", "double_block"),),
        layouts=(Layout("qwen_image", "Qwen-Image", "Qwen-Image, Qwen-Image-Edit",
                        blocks={"joint": 60}, file_hint=r"qwen"),),
    ),
    Family(
        # NextDiT with the caption padded to a multiple of 32 by learned pad tokens. The pads
        # count as text: they sit in the caption's position range, pass the caption refiner
        # (attending to the caption), and the model itself cuts the sequence at the padded
        # caption length; only the real caption would leave image queries' retrieval of them
        # guided as if they were image keys. The image is padded too, at the end of the
        # sequence: those queries are image-stream rows like the rest. The caption and noise
        # refiners run first, unmarked, on text only or image only (no image query retrieves
        # text there): not offered.
        id="zimage", display_name="Z-Image", min_comfyui="0.33.0",
        model_class=("comfy.ldm.lumina.model", "NextDiT"), flags={"pad_tokens_multiple": True},
        hook="joint", text="first", text_length=TextLength(padded_to="pad_tokens_multiple"),
        presets=JOINT_PRESETS, modes=DIT_MODES, groups=NEXTDIT_GROUPS,
        layouts=(Layout("zimage", "Z-Image", "Z-Image Turbo, Z-Image", blocks={"joint": 30},
                        file_hint=r"z[-_ ]?image"),),
    ),
    Family(
        # Z-Image's architecture without padding; query heads share key heads (GQA), expanded
        # by the model before attention.
        id="lumina2", display_name="Lumina 2", min_comfyui="0.33.0",
        model_class=("comfy.ldm.lumina.model", "NextDiT"), flags={"pad_tokens_multiple": False},
        hook="joint", text="first", presets=JOINT_PRESETS, modes=DIT_MODES,
        groups=NEXTDIT_GROUPS,
        layouts=(Layout("lumina2", "Lumina 2", "Lumina Image 2.0, NetaYume Lumina",
                        blocks={"joint": 26}, file_hint=r"lumina|neta"),),
    ),
    Family(
        # FLUX-style blocks; the text is the Qwen2.5-VL tokens followed by the byT5 glyph tokens
        # of quoted text in the prompt. HunyuanVideo shares the class: it has a pooled-vector
        # input (1.0) or a vision input (1.5).
        id="hunyuan_image21", display_name="HunyuanImage 2.1", min_comfyui="0.33.0",
        model_class=("comfy.ldm.hunyuan_video.model", "HunyuanVideo"),
        flags={"vector_in": False, "vision_in_dim": False},
        hook="joint", text="first", text_length=TextLength(extra=(("txt_byt5", 1, 1),)),
        presets=FLUX_PRESETS, modes=DIT_MODES, groups=FLUX_GROUPS,
        layouts=(Layout("hunyuan_image21", "Hunyuan 2.1", "HunyuanImage 2.1",
                        blocks={"double": 20, "single": 40}, file_hint=r"hunyuan[-_ ]?image"),),
    ),
    Family(
        # Image tokens first, then the text (T5, the last Llama-3 layer, the block's own Llama-3
        # layer). ComfyUI sets no block info for HiDream and offers no `dit` replaces, so an
        # attention call cannot tell which block it is in (counting calls would guess from the
        # forward's order, which ComfyUI does not promise). Every attention call of the model is
        # one block's joint attention, so GAG guides all blocks together or none. The upstream
        # change that opens single blocks: HiDream's forward setting block_type/block_index in
        # transformer_options as the other DiTs' do.
        id="hidream", display_name="HiDream", min_comfyui="0.33.0",
        model_class=("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel"),
        hook="joint", text="last", all_blocks_only=True,
        text_length=TextLength(extra=(("encoder_hidden_states_llama3", 2, 2),)),
        presets={"paper": "double, single", "all": "all"}, modes=DIT_MODES,
        groups=(BlockGroup("double", "double_stream_blocks", None, None),
                BlockGroup("single", "single_stream_blocks", None, None, separate_text=False)),
        layouts=(Layout("hidream", "HiDream", "HiDream-I1 full / dev / fast",
                        blocks={"double": 16, "single": 32}, file_hint=r"hidream"),),
    ),
    Family(
        # Each visual block runs an image self-attention and then a cross-attention from the
        # image to the text, both with the block's block_index: GAG guides the cross-attention
        # (keys = text), as in a UNet. Its `dit` replace is broken in ComfyUI 0.33 (the block is
        # called with keywords it does not take), so only the block info reaches it. The text
        # blocks before it see only text: not offered. Kandinsky 5's video models share the
        # class and the hook (untested).
        id="kandinsky5", display_name="Kandinsky 5", min_comfyui="0.33.0",
        model_class=("comfy.ldm.kandinsky5.model", "Kandinsky5"),
        hook="joint", text="cross",
        presets={"paper": "visual", "all": "all", "visual": "visual"}, modes=("text",),
        groups=(BlockGroup("visual", "visual_transformer_blocks", "double", None),),
        layouts=(Layout("kandinsky5_image", "Kandinsky 5", "Kandinsky 5.0 Image Lite",
                        blocks={"visual": 50}, file_hint=r"kandinsky"),),
    ),
    Family(
        # ComfyUI 0.38+. Recognised so that it is refused by name rather than as unknown.
        id="qwen_image21", display_name="Qwen-Image 2.1", min_comfyui="0.38.0",
        model_class=("comfy.ldm.qwen_image21.model", "QwenImage21Transformer2DModel"),
        hook="joint", text="first", presets={}, modes=DIT_MODES, layouts=(),
        refused=("its blocks call attention through a closure built from the model call's "
                 "original transformer_options, one call per sequence segment (causally "
                 "masked text segments, then the image queries against everything before "
                 "them), and with its prefix cache later steps run the image queries alone "
                 "against cached text keys; GAG does not yet read that layout and could not "
                 "be tested against it"),
    ),

    # --- video families (issue 22) ------------------------------------------------------------
    # Wan's siblings (ComfyUI's WanModel subclasses). Those not named here are claimed by the Wan
    # entries below and tested on tiny models (tests/comfy/test_wan_siblings.py): Camera 2.1
    # and 2.2 (a control adapter added to the patch embedding), Fun Control (48 input
    # channels), HuMo (a per-frame audio cross-attention of 16 keys in each block, told apart
    # from the text by its keys), S2V and WanDancer (audio injected between blocks by attention
    # that gets no transformer_options), Wan-Animate (face attention between blocks, likewise),
    # SCAIL / SCAIL-2 (reference and pose tokens joined to the video's: they are queries of the
    # text cross-attention too) and FlowRVS (plain WanModel).
    # Wan 2.2 S2V on ComfyUI 0.3.64 runs its blocks without transformer_options and is refused
    # there by the DiT hook's feature check. Without CLIP-vision features an I2V-type block
    # runs its image branch over the text as well; GAG guides both text-keyed calls.
    Family(
        # Wan 2.1 CausalAR (Self-Forcing / CausVid checkpoints loaded for ComfyUI's ar_video
        # sampler): that sampler runs the blocks through CausalWanModel.forward_block, which
        # hands attention no transformer_options and runs no model wrappers, so GAG would be
        # silently off. Refused by name (at patch time: GAG cannot know the sampler then).
        # Wan T2V models with Self-Forcing / CausVid LoRAs under standard samplers are `wan`.
        id="wan_causal_ar", display_name="Wan 2.1 CausalAR", min_comfyui="0.33.0",
        model_class=("comfy.ldm.wan.ar_model", "CausalWanModel"),
        hook="joint", text="cross", presets={}, modes=("text",), layouts=(),
        refused=("ComfyUI's autoregressive sampler (ar_video) runs its blocks through "
                 "forward_block, which hands attention no transformer_options and runs no model "
                 "wrappers, so GAG could not reach its attention or notice that it did not. "
                 "Sample it without GAG; GAG guides Wan 2.1 / 2.2 T2V models (with Self-Forcing "
                 "or CausVid LoRAs too) under ComfyUI's standard samplers"),
    ),
    Family(
        # Wan-Animate-2 (Wan 2.1 I2V 14B weights driven by a pose video): a pose branch runs
        # each block over the pose tokens with their own text cross-attention (and block info
        # of the block) before the generation pass feeds on its keys and values. GAG guides
        # the generation pass's text cross-attention; the pose branch is left alone (marked
        # groups), as are the CLIP-image call and the per-frame pose attention.
        id="wan_animate2", display_name="Wan-Animate-2", min_comfyui="0.33.0",
        model_class=("comfy.ldm.wan.model_animate2", "WanAnimate2Model"),
        hook="joint", text="cross", presets=CROSS_PRESETS, modes=("text",),
        groups=WAN_MARKED_GROUPS,
        layouts=(Layout("wan_animate2_14b", "Animate-2", "Wan-Animate-2 14B",
                        blocks={"blocks": 40}, file_hint=r"animate[-_ ]?2"),),
    ),
    Family(
        # Wan 2.1 VACE (and Wan 2.2 VACE Fun): after main block i, VACE block ii runs its own
        # self- and text cross-attention over the control video's tokens with block i's block
        # info. GAG guides the main blocks' text cross-attention only (marked groups); the
        # vace_blocks are not offered as layers and stay unguided.
        id="wan_vace", display_name="Wan VACE",
        model_class=("comfy.ldm.wan.model", "VaceWanModel"),
        hook="joint", text="cross", presets=CROSS_PRESETS, modes=("text",),
        groups=WAN_MARKED_GROUPS,
        layouts=(
            Layout("wan_vace_14b", "VACE 14B", "Wan 2.1 VACE 14B, Wan 2.2 VACE Fun A14B",
                   blocks={"blocks": 40}, file_hint=r"vace.*(14b|a14b)"),
            Layout("wan_vace_1_3b", "VACE 1.3B", "Wan 2.1 VACE 1.3B", blocks={"blocks": 30},
                   file_hint=r"vace.*1[._]3b"),
        ),
    ),
    Family(
        # Wan 2.2 TI2V 5B: Wan's blocks on a 48-channel latent (out_dim 48, ComfyUI's WAN22_T2V);
        # no CLIP branch. As for every Wan: each block runs a self-attention over the video
        # tokens and then a cross-attention whose keys are the umT5 text (512 tokens: ComfyUI's
        # tokenizer pads to 512), both told block_type "double" and the block_index (0.33+;
        # 0.3.64 reaches them through the `dit` replaces). GAG guides the cross-attention.
        id="wan22_ti2v", display_name="Wan 2.2 TI2V 5B",
        model_class=("comfy.ldm.wan.model", "WanModel"), flags={"out_dim": 48},
        hook="joint", text="cross", presets=CROSS_PRESETS, modes=("text",), groups=WAN_GROUPS,
        layouts=(Layout("wan22_ti2v_5b", "Wan2.2 5B", "Wan 2.2 TI2V 5B",
                        blocks={"blocks": 30}, file_hint=r"wan.*ti2v|ti2v.*5b"),),
    ),
    Family(
        # Wan 2.1 I2V / FLF2V 14B: the cross-attention makes a second attention call over the
        # CLIP-vision tokens (257; 514 for first-last frame) before the text call. That image
        # retrieval is not guided: GAG guides the call whose keys are the text (told apart by
        # their number; the block's `dit` argument "txt" holds both, hence no text_arg).
        id="wan_i2v", display_name="Wan 2.1 I2V",
        model_class=("comfy.ldm.wan.model", "WanModel"), flags={"img_emb": True},
        hook="joint", text="cross", presets=CROSS_PRESETS, modes=("text",), groups=WAN_GROUPS,
        layouts=(Layout("wan21_i2v_14b", "Wan2.1 I2V", "Wan 2.1 I2V 14B 480p/720p, FLF2V 14B",
                        blocks={"blocks": 40}, file_hint=r"wan[-_. ]?2[-_.]?1.*(i2v|flf)"),),
    ),
    Family(
        # Wan 2.1 T2V and Wan 2.2 T2V/I2V A14B (each of the high- and low-noise experts is a
        # model of its own with this architecture: apply GAG to both; one GAG node can feed
        # both). Wan 2.2 I2V A14B takes its start image as concatenated latents, without CLIP.
        # Fun Control, Camera 2.2, HuMo, S2V and FlowRVS are this entry too (Camera 2.1,
        # Wan-Animate, SCAIL and WanDancer carry a CLIP branch: wan_i2v); see the siblings'
        # comment above.
        id="wan", display_name="Wan 2.1 / 2.2",
        model_class=("comfy.ldm.wan.model", "WanModel"),
        hook="joint", text="cross", presets=CROSS_PRESETS, modes=("text",), groups=WAN_GROUPS,
        layouts=(
            Layout("wan22_a14b", "Wan2.2 14B", "Wan 2.2 T2V / I2V A14B (high- and low-noise)",
                   blocks={"blocks": 40}, file_hint=r"wan[-_. ]?2[-_.]?2"),
            Layout("wan21_14b", "Wan2.1 14B", "Wan 2.1 T2V 14B", blocks={"blocks": 40},
                   file_hint=r"wan.*14b"),
            Layout("wan21_1_3b", "Wan2.1 1.3B", "Wan 2.1 T2V 1.3B", blocks={"blocks": 30},
                   file_hint=r"wan.*1[._]3b"),
        ),
    ),
    Family(
        # HunyuanVideo 1.5: HunyuanImage 2.1's FLUX-style blocks (54 double, no single blocks
        # in the released models) with the conditioning first in the joint sequence: the
        # SigLIP image tokens (I2V, ``clip_fea``), the byT5 glyph tokens, then the Qwen2.5-VL
        # text. All of it counts as text (ComfyUI's img_slice puts the same boundary there).
        id="hunyuan_video15", display_name="HunyuanVideo 1.5", min_comfyui="0.33.0",
        model_class=("comfy.ldm.hunyuan_video.model", "HunyuanVideo"),
        flags={"vision_in_dim": True},
        hook="joint", text="first",
        text_length=TextLength(extra=(("txt_byt5", 1, 1), ("clip_fea", 1, 1))),
        presets={"paper": "double", "all": "all", "double": "double"}, modes=DIT_MODES,
        groups=FLUX_GROUPS,
        layouts=(Layout("hunyuan_video15", "Hunyuan 1.5", "HunyuanVideo 1.5 T2V / I2V (480p, "
                        "720p, step-distilled)", blocks={"double": 54},
                        file_hint=r"hunyuan[-_ ]?video[-_ ]?1[-_.]?5"),),
    ),
    Family(
        # LTX-2: each block runs video self-attention, video text cross-attention, audio
        # self- and text cross-attention, then audio→video and video→audio attention. GAG
        # guides the video's text cross-attention only and leaves every audio attention alone.
        # ComfyUI tells LTX attention no block, so GAG marks blocks through their `dit`
        # replaces, whose arguments carry the video text as "v_context" and the streams as
        # img = (video, audio). Before LTX-Video, whose class it subclasses.
        id="ltx2", display_name="LTX-2", min_comfyui="0.33.0",
        model_class=("comfy.ldm.lightricks.av_model", "LTXAVModel"),
        hook="joint", text="cross", presets=CROSS_PRESETS, modes=("text",),
        groups=(BlockGroup("blocks", "transformer_blocks", None, "double_block",
                           text_arg="v_context"),),
        layouts=(Layout("ltx2", "LTX-2", "LTX-2 (19B dev / distilled)", blocks={"blocks": 48},
                        file_hint=r"ltx[-_ ]?2"),),
    ),
    Family(
        # LTX-Video 0.9.x: attn1 (video self-attention; a keyframe guide mask may split it into
        # 2-3 calls over parts of the queries) and attn2 (text cross-attention) in every block;
        # no block info, `dit` replaces.
        id="ltxv", display_name="LTX-Video",
        model_class=("comfy.ldm.lightricks.model", "LTXVModel"),
        hook="joint", text="cross", presets=CROSS_PRESETS, modes=("text",),
        groups=(BlockGroup("blocks", "transformer_blocks", None, "double_block"),),
        layouts=(
            Layout("ltxv_13b", "LTXV 13B", "LTX-Video 0.9.7 / 0.9.8 13B", blocks={"blocks": 48},
                   file_hint=r"ltx.*13b"),
            Layout("ltxv_2b", "LTXV 2B", "LTX-Video 0.9.x 2B", blocks={"blocks": 28},
                   file_hint=r"ltx"),
        ),
    ),
)


# ---------------------------------------------------------------------------------------------
# Reading the table
# ---------------------------------------------------------------------------------------------

def family_class(family: Family) -> Optional[type]:
    """The family's diffusion-model class, or None when this ComfyUI does not have it."""
    module_name, class_name = family.model_class
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    found = getattr(module, class_name, None)
    return found if isinstance(found, type) else None


def _flag(obj, dotted: str, wanted) -> bool:
    """Whether the attribute at ``dotted`` is as ``wanted``: truthiness for True/False,
    equality for any other value."""
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
    if isinstance(wanted, bool):
        return bool(obj) == wanted
    return obj == wanted


def diffusion_model_of(model_patcher):
    return getattr(getattr(model_patcher, "model", None), "diffusion_model", None)


def matches(family: Family, model_patcher) -> bool:
    cls = family_class(family)
    diffusion = diffusion_model_of(model_patcher)
    if cls is None or not isinstance(diffusion, cls):
        return False
    return all(_flag(diffusion, path, wanted) for path, wanted in family.flags.items())


def model_name(model_patcher) -> str:
    """A readable name for error messages: the model class and its config class."""
    model = getattr(model_patcher, "model", None)
    config = getattr(model, "model_config", None)
    parts = [type(model).__name__ if model is not None else type(model_patcher).__name__]
    if config is not None:
        parts.append(type(config).__name__)
    diffusion = getattr(model, "diffusion_model", None)
    if diffusion is not None:
        parts.append(type(diffusion).__name__)
    return "/".join(dict.fromkeys(parts))


def find_family(model_patcher) -> Family:
    """The family of this model, or a ValueError naming the model and what is supported."""
    for family in FAMILIES:
        if matches(family, model_patcher):
            if family.refused:
                raise ValueError(f"GAG does not support {family.display_name} models yet "
                                 f"({model_name(model_patcher)}): {family.refused}")
            return family
    supported = ", ".join(f.display_name for f in FAMILIES if not f.refused)
    raise ValueError(f"GAG does not support this model ({model_name(model_patcher)}); "
                     f"supported families: {supported}")


def family_by_id(family_id: str) -> Family:
    for family in FAMILIES:
        if family.id == family_id:
            return family
    raise KeyError(family_id)


def all_presets() -> list[str]:
    """Every preset name any family offers, "paper" first, then "custom"."""
    names = ["paper"]
    for family in FAMILIES:
        names += [n for n in family.presets if n not in names]
    return names + ["custom"]


def front_end_table() -> list[dict]:
    """The layer map's data: one entry per released layout, in the shape web/js reads.

    ``attention`` maps a block number to its number of transformers (UNet) or to None (a DiT
    block is one attention); blocks without attention are absent and drawn dimmed.
    """
    table = []
    for family in FAMILIES:
        for layout in family.layouts:
            groups = []
            for name, count in layout.blocks.items():
                if layout.transformers:
                    attention = {str(b): n for b, n in layout.transformers.get(name, {}).items()}
                else:
                    attention = {str(b): None for b in range(count)}
                groups.append({"name": name, "blocks": count, "attention": attention})
            table.append({"id": layout.id, "label": layout.label, "family": family.id,
                          "display_name": family.display_name, "models": layout.models,
                          "groups": groups, "presets": dict(family.presets),
                          "modes": list(family.modes), "file_hint": layout.file_hint})
    return table
