"""RL trainers on one experience maker: PPO, MORLHF, PPO-Lagrangian (and REINFORCE/RLOO, HC-RLHF).

``experience`` makes rollouts (sample, score, log-probs under π and π_ref); each trainer turns them
into a loss. Trainer modules are imported on first use by ``training.runner``.
"""

from .experience import Experience, ExperienceMaker

__all__ = ["Experience", "ExperienceMaker"]
