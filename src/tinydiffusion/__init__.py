"""tinydiffusion: diffusion models from scratch, as real software.

Contracts every module keeps:
- Images are float tensors (N, C, H, W) in [-1, 1] inside the library; on disk they are 8-bit PNG grids or
  .npz files with `images` float32 (N, C, H, W) in [0, 1] (and `labels` when conditional).
- Discrete time is an integer t in {0..T-1}, t = 0 least noisy, alpha_bar[0] = 1 - beta[0]. Continuous time
  is a float in [0, 1], 0 = data, 1 = noise; `schedules.continuous_time` is the one conversion, s = (t + 1) / T.
- Forward process: x_t = alpha_t x0 + sigma_t eps (DDPM: alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t)).
- Networks know nothing about diffusion: net(x, s, cond=None) -> tensor shaped like x. `denoiser.Denoiser` turns
  the output (eps, x0 or v) into (x0_hat, eps_hat); samplers use only that wrapper.
- Samplers are stateless functions sample_xxx(denoiser, x_T, timesteps, *, cond, generator, callback) -> x_0.
- Schedules compute in float64 and cast at the point of use; every random function takes a torch.Generator.
- Checkpoints are safetensors + config.json + meta.json; the training state loads with weights_only=True.
"""

__version__ = "0.1.0"
