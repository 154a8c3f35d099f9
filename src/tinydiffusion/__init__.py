"""tinydiffusion: diffusion models from scratch, as real software.

Contracts every module keeps:
- Images are float tensors (N, C, H, W) in [-1, 1] inside the library; on disk they are 8-bit PNG grids or
  .npz files with `images` float32 (N, C, H, W) in [0, 1] (and `labels` when conditional). Pixels are clamped
  where they are made (`data.to_unit_range`); generation returns the sampler's output as it is.
- Time is continuous, a float t in [0, 1] with 0 = data and 1 = noise, everywhere inside the library. A DDPM
  table's integer step k in {0..T-1} (k = 0 least noisy, alpha_bar[0] = 1 - beta[0]) sits at t = (k + 1) / T;
  `paths.to_time` / `paths.from_time` are the one conversion, for what users type and pictures print.
  In a sampler, (t, s) is one step from time t to the next, less noisy time s; grids end at 0.
- Forward process on a path (paths.py): x_t = alpha(t) x0 + sigma(t) eps (DDPM: alpha = sqrt(alpha_bar),
  sigma = sqrt(1 - alpha_bar); rectified flow: alpha = 1 - t, sigma = t).
- Networks know nothing about diffusion: net(x, t, cond=None) -> tensor shaped like x, t continuous time (B,),
  cond a `conditioning.Cond` (class labels, prompt token states) or None. `denoiser.Denoiser` turns the output
  (eps, x0, v or the velocity u) into (x0_hat, eps_hat); samplers use only that wrapper; guidance wraps it.
- Samplers are stateless functions sample_xxx(denoiser, x_T, grid, *, cond, generator, callback) -> x_0 around a
  pure one-step update xxx_step(path, x, x0_hat, eps_hat, t, s, ...) -> x_s.
- Schedules compute in float64 and cast at the point of use; every random function takes a torch.Generator.
- Checkpoints are safetensors + config.json + meta.json; the training state loads with weights_only=True.
- Every named thing (models, samplers, schedules, presets, ...) lives in a `registry.Registry`.

Layout. The math spine is flat at the top: schedules, paths, process, timesteps, denoiser, objectives, samplers,
guidance, generate (tensors in, tensors out; no files, networks or pictures). Around it: models/ (networks),
conditioning/ (Cond, captions, text encoder), data/ (datasets and sample files), train/ (training loops), eval/
(metrics and feature extractors), viz/ (pictures), experiments/, cli/ (one module per command); runs.py and
checkpoint.py handle run directories, io.py atomic writes. tests/test_layout.py checks the import rules.
"""

__version__ = "0.1.0"
