"""tinydiffusion: diffusion models from scratch, as real software.

Contracts every module keeps:
- Images are float tensors (N, C, H, W) in [-1, 1] inside the library; on disk they are 8-bit PNG grids or
  .npz files with `images` float32 (N, C, H, W) in [0, 1] (and `labels` when conditional). Pixels are clamped
  where they are made (`data.to_unit_range`); generation returns the sampler's output as it is.
- Discrete time is an integer t in {0..T-1}, t = 0 least noisy, alpha_bar[0] = 1 - beta[0]. Continuous time
  is a float in [0, 1], 0 = data, 1 = noise; `schedules.continuous_time` is the one conversion, (t + 1) / T.
  In a sampler, (t, s) is one step from time t to the next, less noisy time s.
- Forward process: x_t = alpha_t x0 + sigma_t eps (DDPM: alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t)).
- Networks know nothing about diffusion: net(x, t, cond=None) -> tensor shaped like x, t continuous time (B,),
  cond a `conditioning.Cond` (class labels, prompt token states) or None. `denoiser.Denoiser` turns the output
  (eps, x0 or v) into (x0_hat, eps_hat); samplers use only that wrapper; guidance wraps it.
- Samplers are stateless functions sample_xxx(denoiser, x_T, timesteps, *, cond, generator, callback) -> x_0.
- Schedules compute in float64 and cast at the point of use; every random function takes a torch.Generator.
- Checkpoints are safetensors + config.json + meta.json; the training state loads with weights_only=True.
- Every named thing (models, samplers, schedules, presets, ...) lives in a `registry.Registry`.

Layout. The math spine is flat at the top: schedules, process, timesteps, denoiser, objectives, samplers,
guidance, generate (tensors in, tensors out; no files, networks or pictures). Around it: models/ (networks),
conditioning/ (Cond, captions, text encoder), data/ (datasets and sample files), train/ (training loops), eval/
(metrics and feature extractors), viz/ (pictures), experiments/, cli/ (one module per command); runs.py and
checkpoint.py handle run directories, io.py atomic writes. tests/test_layout.py checks the import rules.
"""

__version__ = "0.1.0"
