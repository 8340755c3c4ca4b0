"""What the bundled workflows say and load: prompts, model files (name, Hugging Face URL,
models/ folder), the Read-me notes and the thumbnails' titles. Pure data; the graphs are wired
and drawn by build_workflows.py."""

HF = "https://huggingface.co/"


def model(name, repo_path, directory):
    return {"name": name, "url": HF + repo_path, "directory": directory}


SDXL_CKPT = model("sd_xl_base_1.0.safetensors",
                  "stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
                  "checkpoints")
PROMPT_SDXL = ("a red fox sitting on a moss-covered stone in a misty pine forest at dawn, "
               "three mushrooms in front of it, soft golden light, detailed fur, photograph")
NEGATIVE_SDXL = "blurry, lowres, watermark, text, deformed"


GAG_PAPER = {"scale": 10.0, "eta": 15.0, "zeta": 0.0}

COMMON_GAG_TEXT = """\
GAG Model Patch: scale (λ) 10, eta (η) 15, zeta (ζ) 0 — the paper's defaults. GAG Layers
'paper' = cross-attention of the UNet's input and output blocks (middle skipped); GAG Sparsity
α 1.5 and GAG Schedule 0→1 constant are the defaults too (same result as leaving them
unconnected)."""

NOTE_SDXL = f"""GAG A/B — SDXL base 1.0 with CFG

A (top) samples plain SDXL; B (bottom) samples the same model through GAG Model Patch. Both share
the seed (RandomNoise), sampler, steps/schedule, prompts and latent, so any difference between the
two images comes from GAG alone. Outputs: output/GAG/sdxl_A_… and output/GAG/sdxl_B_….

MODEL FILES
• models/checkpoints/sd_xl_base_1.0.safetensors
  (stabilityai/stable-diffusion-xl-base-1.0 on Hugging Face; holds UNet, both text encoders, VAE)

SETTINGS AND WHY
• 1024×1024: SDXL's native resolution.
• 30 steps, euler, normal schedule: the SDXL base's reference sampler (Euler); by 30 steps the
  image has settled.
• CFG 6 in both CFG nodes: SDXL base works best at CFG 5–7. GAG works inside the attention layers
  and adds no extra model pass, so it stacks on top of CFG.
• {COMMON_GAG_TEXT}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated or over-sharpened; raise it
   (12–15) if A and B look almost the same.
2. GAG Schedule → end_percent 0.6–0.8 lets the last, detail-forming steps run unguided.
3. The prompt, and the seed in "Seed (shared by A and B)".
4. CFG: change BOTH CFG nodes together, or the A/B comparison is no longer fair.

WHAT TO LOOK FOR
B should follow the prompt more closely (objects, counts, attributes) and show crisper structure
than A. If B has blown-out colours or grainy artefacts, λ is too high for this model."""

NOTE_HYPER = f"""GAG A/B — Hyper-SDXL (8-step LoRA on SDXL base), no CFG

A (top) samples plain Hyper-SDXL; B (bottom) the same model through GAG Model Patch. Both share
seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/hyper_sdxl_A_… and …_B_….

MODEL FILES
• models/checkpoints/sd_xl_base_1.0.safetensors (stabilityai/stable-diffusion-xl-base-1.0)
• models/loras/Hyper-SDXL-8steps-lora.safetensors (ByteDance/Hyper-SD)

SETTINGS AND WHY
• 8 steps with the 8-step LoRA at strength 1.0: Hyper-SD's official recipe (LoRA fused at full
  strength, DDIM with "trailing" timesteps, guidance scale 0 = no CFG).
• sampler ddim + scheduler sgm_uniform: ComfyUI's equivalent of that recipe; sgm_uniform with
  8 steps samples at timesteps 999, 874, …, 125, DDIM's "trailing" ones (999, 874, …, 124) to
  within one.
• No CFG (Basic Guider, i.e. CFG 1, no negative prompt): the distilled model is meant to run
  without CFG, and CFG would double the cost. This is where GAG helps most: it adds guidance
  without a second model pass.
• {COMMON_GAG_TEXT} The paper uses the same
  defaults for CFG-free distilled models.

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: 5–8 if B looks oversaturated, up to 15 if the effect is too weak.
2. LoRA strength 0.7–1.0 when you swap sd_xl_base_1.0 for a fine-tuned SDXL checkpoint.
3. Prompt and seed.
For negative prompts, Hyper-SD also ships CFG-preserving LoRAs (e.g.
Hyper-SDXL-8steps-CFG-lora.safetensors, CFG 5–8): replace both Basic Guider nodes with CFG Guider
nodes set to the same CFG.

WHAT TO LOOK FOR
Few-step distilled models often lose prompt details (counts, attributes, small objects) and look
flat; B should recover some of them at the same 8 steps."""

NOTE_DMD2 = f"""GAG A/B — DMD2 (SDXL, 4 steps), no CFG

A (top) samples plain DMD2; B (bottom) the same model through GAG Model Patch. Both share seed,
sampler, steps/schedule, prompt and latent. Outputs: output/GAG/dmd2_A_… and …_B_….

MODEL FILES
• models/checkpoints/sd_xl_base_1.0.safetensors (stabilityai/stable-diffusion-xl-base-1.0)
• models/loras/dmd2_sdxl_4step_lora_fp16.safetensors (tianweiy/DMD2)
• Or, instead of the LoRA: the distilled UNet dmd2_sdxl_4step_unet_fp16.bin in
  models/diffusion_models, loaded with "Load Diffusion Model" in place of the LoRA node (keep the
  checkpoint's CLIP and VAE).

SETTINGS AND WHY
• 4 steps, LoRA strength 1.0, sampler lcm: DMD2's official recipe (LCM scheduler, guidance
  scale 0 = no CFG, LoRA fused at 1.0).
• scheduler sgm_uniform: with 4 steps it samples at timesteps 999, 749, 500, 250 — the ones
  DMD2 was trained on (999, 749, 499, 249) to within one.
• No CFG (Basic Guider, i.e. CFG 1, no negative prompt): DMD2 was distilled to run without CFG.
  GAG adds guidance without a second model pass.
• {COMMON_GAG_TEXT} The paper uses the same
  defaults for CFG-free distilled models.

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: 5–8 if B looks oversaturated, up to 15 if the effect is too weak.
2. Prompt and seed.
3. LoRA strength 0.7–1.0 on fine-tuned SDXL checkpoints.

WHAT TO LOOK FOR
B should keep more of the prompt's details and structure than A at the same 4 steps."""

HYPER_LORA = model("Hyper-SDXL-8steps-lora.safetensors",
                   "ByteDance/Hyper-SD/resolve/main/Hyper-SDXL-8steps-lora.safetensors", "loras")
DMD2_LORA = model("dmd2_sdxl_4step_lora_fp16.safetensors",
                  "tianweiy/DMD2/resolve/main/dmd2_sdxl_4step_lora_fp16.safetensors", "loras")


FLUX_VAE = model("ae.safetensors", "black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors",
                 "vae")
CLIP_L = model("clip_l.safetensors",
               "comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders")
T5XXL = model("t5xxl_fp16.safetensors",
              "comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
              "text_encoders")
FLUX_DEV = model("flux1-dev.safetensors",
                 "black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
                 "diffusion_models")
FLUX_SCHNELL = model("flux1-schnell.safetensors",
                     "black-forest-labs/FLUX.1-schnell/resolve/main/flux1-schnell.safetensors",
                     "diffusion_models")
QWEN_REPO = "Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/"
QWEN_MODEL = model("qwen_image_fp8_e4m3fn.safetensors",
                   QWEN_REPO + "diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
                   "diffusion_models")
QWEN_TE = model("qwen_2.5_vl_7b_fp8_scaled.safetensors",
                QWEN_REPO + "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders")
QWEN_VAE = model("qwen_image_vae.safetensors", QWEN_REPO + "vae/qwen_image_vae.safetensors", "vae")

PROMPT_DIT = ("a red fox sitting on a moss-covered stone in a misty pine forest at dawn, three "
              "mushrooms in front of it, a wooden sign that reads \"GAG\" leaning on the stone, "
              "soft golden light, detailed fur, photograph")


DIT_GAG_TEXT = """\
GAG Model Patch: scale (λ) 10, eta (η) 15, zeta (ζ) 0 — the paper's defaults. GAG Layers
'paper' + mode 'auto' = {layers}, guiding how image tokens retrieve text tokens inside each
joint attention (text mode); mode 'joint' guides the whole joint attention instead. GAG Sparsity
α 1.5 and GAG Schedule 0→1 constant are the defaults (same as leaving them unconnected)."""

FLUX_FILES = """\
• models/text_encoders/clip_l.safetensors and t5xxl_fp16.safetensors
  (comfyanonymous/flux_text_encoders; t5xxl_fp8_e4m3fn.safetensors also works, with less memory)
• models/vae/ae.safetensors (the FLUX.1 autoencoder, in black-forest-labs/FLUX.1-schnell or -dev)"""

NOTE_FLUX_DEV = f"""GAG A/B — FLUX.1-dev (guidance-distilled, no CFG)

A (top) samples plain FLUX.1-dev; B (bottom) the same model through GAG Model Patch. Both share
seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/flux1_dev_A_… and …_B_….

MODEL FILES
• models/diffusion_models/flux1-dev.safetensors (black-forest-labs/FLUX.1-dev; gated: accept the
  licence on Hugging Face first)
{FLUX_FILES}

SETTINGS AND WHY
• 20 steps, euler, simple schedule, 1024×1024: the reference settings for FLUX.1-dev in ComfyUI.
• FluxGuidance 3.5: FLUX.1-dev is guidance-distilled; the guidance strength is an input of the
  model, not CFG. So both branches use a Basic Guider (CFG 1, no negative prompt, one model pass
  per step), and GAG adds its guidance inside the attention without a second pass.
• {DIT_GAG_TEXT.format(layers="every double- and single-stream block")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated or artefacty, raise it if
   A and B look the same.
2. GAG Layers → mode 'joint' for a stronger, broader effect; preset 'double' to guide only the
   19 double-stream blocks.
3. FluxGuidance (2.5–4) and the prompt/seed.

WHAT TO LOOK FOR
B should follow the prompt more closely (the three mushrooms, the sign's text) and show crisper
structure; GAG costs no extra model pass."""

NOTE_FLUX_SCHNELL = f"""GAG A/B — FLUX.1-schnell (4-step distilled, no CFG)

A (top) samples plain FLUX.1-schnell; B (bottom) the same model through GAG Model Patch. Both
share seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/flux1_schnell_A_…
and …_B_….

MODEL FILES
• models/diffusion_models/flux1-schnell.safetensors (black-forest-labs/FLUX.1-schnell)
{FLUX_FILES}

SETTINGS AND WHY
• 4 steps, euler, simple schedule, 1024×1024: FLUX.1-schnell is timestep-distilled for 1–4 steps.
• No CFG and no FluxGuidance: schnell has no guidance input and runs at CFG 1 (Basic Guider).
  GAG is the only guidance here, and it adds no model pass.
• {DIT_GAG_TEXT.format(layers="every double- and single-stream block")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: 5–8 if B looks oversaturated, up to 15 if the effect is too weak.
2. GAG Layers → mode 'joint' for a broader effect.
3. Prompt and seed.

WHAT TO LOOK FOR
Few-step models tend to drop prompt details; B should keep more of them (the three mushrooms,
the sign's text) at the same 4 steps."""

NOTE_QWEN = f"""GAG A/B — Qwen-Image with CFG

A (top) samples plain Qwen-Image; B (bottom) the same model through GAG Model Patch. Both share
seed, sampler, steps/schedule, prompts and latent. Outputs: output/GAG/qwen_image_A_… and …_B_….

MODEL FILES (ComfyUI's repackaging of Qwen/Qwen-Image: Comfy-Org/Qwen-Image_ComfyUI)
• models/diffusion_models/qwen_image_fp8_e4m3fn.safetensors (or qwen_image_bf16.safetensors)
• models/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors
• models/vae/qwen_image_vae.safetensors

SETTINGS AND WHY
• 1328×1328: Qwen-Image's native square resolution.
• Flow shift 3.1 (ModelSamplingAuraFlow), 20 steps, euler, simple, CFG 2.5 in both CFG nodes:
  ComfyUI's reference settings for Qwen-Image (the Qwen team uses 50 steps and CFG 4).
• {DIT_GAG_TEXT.format(layers="all 60 transformer blocks")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated, raise it if A and B look
   the same.
2. GAG Layers → mode 'joint' for a broader effect.
3. CFG: change BOTH CFG nodes together; with a Qwen-Image-Lightning LoRA use CFG 1 (or Basic
   Guider nodes) and its step count.

WHAT TO LOOK FOR
B should follow the prompt more closely (the three mushrooms, the sign's text) with crisper
structure than A."""


FLUX2_REPO = "Comfy-Org/flux2-klein/resolve/main/split_files/"
FLUX2_KLEIN = model("flux-2-klein-4b.safetensors",
                    FLUX2_REPO + "diffusion_models/flux-2-klein-4b.safetensors", "diffusion_models")
FLUX2_KLEIN_TE = model("qwen_3_4b.safetensors", FLUX2_REPO + "text_encoders/qwen_3_4b.safetensors",
                       "text_encoders")
FLUX2_VAE = model("flux2-vae.safetensors",
                  "Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors", "vae")

NOTE_FLUX2_KLEIN = f"""GAG A/B — FLUX.2 [klein] 4B (4-step distilled, CFG 1)

A (top) samples plain FLUX.2 Klein; B (bottom) the same model through GAG Model Patch. Both
share seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/flux2_klein_A_… and
…_B_…. Needs a ComfyUI with FLUX.2 Klein support (checked on 0.33.0; 0.3.64 has no FLUX.2).

MODEL FILES (ComfyUI's repackaging: Comfy-Org/flux2-klein and Comfy-Org/flux2-dev)
• models/diffusion_models/flux-2-klein-4b.safetensors (the step-distilled Klein 4B)
• models/text_encoders/qwen_3_4b.safetensors
• models/vae/flux2-vae.safetensors (the FLUX.2 autoencoder, shared by dev and Klein)

SETTINGS AND WHY
• 4 steps, euler, Flux2Scheduler at 1024×1024: the reference settings of ComfyUI's Klein 4B
  distilled template; Flux2Scheduler sets the noise schedule from the image size, so keep its
  width and height equal to the latent's.
• CFG 1 (Basic Guider, no negative prompt, one model pass per step): the distilled Klein runs
  without CFG. This is the case GAG is for: it guides inside the attention with no extra pass,
  where CFG would double the cost and is not meant to run.
• {DIT_GAG_TEXT.format(layers="every double- and single-stream block (5 and 20 in Klein 4B)")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated or artefacty, raise it if
   A and B look the same.
2. GAG Layers → mode 'joint' for a stronger, broader effect (start at scale 2–4 there).
3. Prompt and seed. For the non-distilled flux-2-klein-base-4b use its 20 steps and CFG Guider
   nodes (same CFG in both).

WHAT TO LOOK FOR
Few-step models tend to drop prompt details; B should keep more of them (the three mushrooms,
the sign's text) at the same 4 steps, at the same cost per step."""


ZIMAGE_REPO = "Comfy-Org/z_image_turbo/resolve/main/split_files/"
ZIMAGE_MODEL = model("z_image_turbo_bf16.safetensors",
                     ZIMAGE_REPO + "diffusion_models/z_image_turbo_bf16.safetensors",
                     "diffusion_models")
ZIMAGE_TE = model("qwen_3_4b.safetensors", ZIMAGE_REPO + "text_encoders/qwen_3_4b.safetensors",
                  "text_encoders")
ZIMAGE_VAE = model("ae.safetensors", ZIMAGE_REPO + "vae/ae.safetensors", "vae")

NOTE_ZIMAGE_TURBO = f"""GAG A/B — Z-Image Turbo (8 steps, CFG 1)

A (top) samples plain Z-Image Turbo; B (bottom) the same model through GAG Model Patch. Both
share seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/z_image_turbo_A_…
and …_B_…. Needs ComfyUI 0.33 or newer (Z-Image support; GAG tested there).

MODEL FILES (Comfy-Org/z_image_turbo, split_files/…)
• models/diffusion_models/z_image_turbo_bf16.safetensors
• models/text_encoders/qwen_3_4b.safetensors (Qwen3-4B; CLIP type lumina2)
• models/vae/ae.safetensors (the FLUX.1 autoencoder)

SETTINGS AND WHY
• 8 steps, res_multistep, simple schedule, flow shift 3 (ModelSamplingAuraFlow), 1024×1024:
  ComfyUI's reference settings for Z-Image Turbo.
• CFG 1: Turbo is distilled to run without CFG (ComfyUI's template feeds KSampler a zeroed
  negative at CFG 1, which is one model pass: the Basic Guider here does the same). No second
  pass is available to guide with, so GAG is the guidance, and it adds no model pass.
• {DIT_GAG_TEXT.format(layers="all 30 main transformer layers")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated or artefacty, raise it if
   A and B look the same.
2. GAG Layers → mode 'joint' for a stronger, broader effect.
3. Prompt and seed.

WHAT TO LOOK FOR
Few-step distilled models tend to drop prompt details; B should keep more of them (the three
mushrooms, the sign's text) at the same 8 steps."""

# --- video (Wan 2.2) ----------------------------------------------------------------------

WAN22_REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
WAN22_T2V_HIGH = model("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                       WAN22_REPO + "diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                       "diffusion_models")
WAN22_T2V_LOW = model("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                      WAN22_REPO + "diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                      "diffusion_models")
WAN22_LIGHTNING_HIGH = model(
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
    WAN22_REPO + "loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", "loras")
WAN22_LIGHTNING_LOW = model(
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
    WAN22_REPO + "loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors", "loras")
WAN22_TI2V = model("wan2.2_ti2v_5B_fp16.safetensors",
                   WAN22_REPO + "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors",
                   "diffusion_models")
WAN_UMT5 = model("umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                 "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
                 "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders")
WAN21_VAE = model("wan_2.1_vae.safetensors", WAN22_REPO + "vae/wan_2.1_vae.safetensors", "vae")
WAN22_VAE = model("wan2.2_vae.safetensors", WAN22_REPO + "vae/wan2.2_vae.safetensors", "vae")

PROMPT_VIDEO = ("a red fox trots along a moss-covered log in a misty pine forest at dawn, stops, "
                "turns its head towards the camera and sits down beside three red mushrooms; "
                "soft golden light through the trees, slow camera push-in, detailed fur")
# Wan's own default negative prompt (ComfyUI's Wan templates): at CFG 1 it is not used.
NEGATIVE_WAN = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
                "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
                "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")

VIDEO_GAG_TEXT = """\
GAG Model Patch: scale (λ) 10, eta (η) 15, zeta (ζ) 0 — the paper's defaults. GAG Layers
'paper' = the text cross-attention of every transformer block ({layers}): GAG guides how the
video tokens retrieve the prompt's tokens, and leaves the blocks' self-attention alone. GAG
Sparsity α 1.5 and GAG Schedule 0→1 constant are the defaults (same as leaving them
unconnected)."""

NOTE_WAN22_T2V_LIGHTNING = f"""GAG A/B — Wan 2.2 T2V A14B with the 4-step lightning LoRA, CFG 1

A (top) samples plain Wan 2.2; B (bottom) the same two models each through GAG Model Patch.
Both share seed, sampler, steps, split point, prompts and latent, so any difference between the
two videos comes from GAG alone. Outputs: output/GAG/wan22_t2v_A_… and …_B_… (MP4).
Needs a ComfyUI with Wan 2.2 (GAG checked on 0.33.0).

MODEL FILES (ComfyUI's repackaging: Comfy-Org/Wan_2.2_ComfyUI_Repackaged, split_files/…)
• models/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors (high-noise expert)
• models/diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors (low-noise expert)
• models/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors and
  wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors (the lightx2v 4-step LoRAs)
• models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors (Comfy-Org/Wan_2.1_ComfyUI_repackaged)
• models/vae/wan_2.1_vae.safetensors

SETTINGS AND WHY
• Two experts: Wan 2.2 A14B runs its high-noise model for the first half of the steps and its
  low-noise model for the rest (two KSamplerAdvanced per branch, split at step 2 of 4). GAG must
  patch BOTH models: one GAG Model Patch per expert, fed by the same GAG Layers, Sparsity and
  Schedule nodes.
• 4 steps, euler, simple, CFG 1, flow shift 5 (ModelSamplingSD3), LoRAs at 1.0: the settings of
  ComfyUI's Wan 2.2 lightning template. At CFG 1 there is no negative pass, so these users have
  no guidance at all; GAG adds it inside the attention without a second model pass.
• 832×480, 81 frames at 16 fps (5 s): Wan's 480p size. That is 32,760 video tokens per attention;
  GAG works through them in bounded chunks.
• {VIDEO_GAG_TEXT.format(layers="40 blocks in each expert")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale, on BOTH patches: lower it (5–8) if B looks oversaturated or jittery,
   raise it (12–15) if A and B look the same.
2. GAG Schedule → end_percent 0.5 guides only the high-noise expert's steps (layout and motion).
3. Prompt and seed (change the seed on BOTH high-noise samplers, A and B).

WHAT TO LOOK FOR
Lightning LoRAs tend to drop prompt details and flatten motion; B should keep more of the
prompt (the three mushrooms, the fox sitting down) at the same 4 steps and cost per step."""

NOTE_WAN22_TI2V = f"""GAG A/B — Wan 2.2 TI2V 5B (text to video, CFG 5)

A (top) samples plain Wan 2.2 TI2V 5B; B (bottom) the same model through GAG Model Patch. Both
share seed, sampler, steps, prompts and latent. Outputs: output/GAG/wan22_ti2v_A_… and …_B_…
(MP4). Needs a ComfyUI with Wan 2.2 (GAG checked on 0.33.0).

MODEL FILES (Comfy-Org/Wan_2.2_ComfyUI_Repackaged, split_files/…)
• models/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors
• models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors (Comfy-Org/Wan_2.1_ComfyUI_repackaged)
• models/vae/wan2.2_vae.safetensors (the Wan 2.2 VAE: 48 channels, 16× down-scaling)

SETTINGS AND WHY
• 20 steps, uni_pc, simple, CFG 5, flow shift 8 (ModelSamplingSD3), 1280×704, 121 frames at
  24 fps: the settings of ComfyUI's Wan 2.2 5B template. GAG adds no model pass and stacks on
  CFG (KSampler's CFG is shared by A and B here, so it stays a fair comparison).
• Wan22ImageToVideoLatent without a start image is text to video; connect a Load Image to its
  start_image for image to video.
• {VIDEO_GAG_TEXT.format(layers="all 30 blocks")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated, raise it if A and B look
   the same.
2. CFG: change it in BOTH KSampler nodes; at CFG 1 (faster, no negative pass) GAG is the only
   guidance.
3. Prompt and seed (in both KSamplers).

WHAT TO LOOK FOR
B should follow the prompt more closely (the three mushrooms, the fox sitting down) with crisper
structure than A."""

TITLES = {
    "gag_sdxl_base_cfg": "SDXL base 1.0 · CFG 6 · 30 steps",
    "gag_hyper_sdxl_8step": "Hyper-SDXL 8-step LoRA · no CFG",
    "gag_dmd2_sdxl_4step": "DMD2 SDXL 4-step · no CFG",
    "gag_flux1_dev": "FLUX.1-dev · guidance 3.5 · 20 steps",
    "gag_flux1_schnell": "FLUX.1-schnell · 4 steps",
    "gag_qwen_image": "Qwen-Image · CFG 2.5 · 20 steps",
    "gag_flux2_klein_4step": "FLUX.2 [klein] 4B · 4 steps · CFG 1",
    "gag_z_image_turbo": "Z-Image Turbo · 8 steps · CFG 1",
    "gag_wan22_t2v_lightning_4step": "Wan 2.2 T2V 14B · lightning 4 steps · CFG 1",
    "gag_wan22_ti2v_5b": "Wan 2.2 TI2V 5B · CFG 5 · 20 steps",
}
