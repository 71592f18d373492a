"""Crystal diffusion model (ground floor: imports nothing from tools/, store/ or agents/).

- ``crystal``: CrystalBatch (lattice, fractional coordinates, types, batch index) and the invariant
  lattice code (LatticeCoder).
- ``corruption``: forward processes per field (DDPM for lattice code and type one-hot, wrapped normal for F).
- ``denoiser``: NoisyCrystal, Prediction, the one-method Backbone protocol and CSPNet.
- ``model``: DiffusionModel bundle (network + processes + vocabulary + atom-count prior), weight files.
- ``training``: Trainer (per-field losses, EMA, exact resume).
- ``sampler``: Sampler (reverse process, predictor-corrector, x0 estimates, step hooks, guidance).
- ``convert``: CrystalBatch -> pymatgen Structures.
"""
