"""Layer 4: chat rendering, batched decoding with KV cache, sampling, KL to the reference, policies."""

from .base_policy import BasePolicy
from .chat import encode_prompts, pad_left, prompt_token_ids, render_prompts
from .decoding import CausalLMScorer, Decoded, NextTokenScorer, decode_loop, eos_token_ids
from .kl import kl_to_reference, sequence_logprobs
from .policy import (
    STEERING,
    GenerationConfig,
    PreferenceArg,
    Response,
    SteerablePolicy,
    check_steerable,
    generate_by_preference,
    preferences_per_prompt,
)
from .sampling import TokenSampler, generate, sequence_seeds

__all__ = [
    "STEERING",
    "BasePolicy",
    "CausalLMScorer",
    "Decoded",
    "GenerationConfig",
    "NextTokenScorer",
    "PreferenceArg",
    "Response",
    "SteerablePolicy",
    "TokenSampler",
    "check_steerable",
    "decode_loop",
    "encode_prompts",
    "eos_token_ids",
    "generate",
    "generate_by_preference",
    "kl_to_reference",
    "pad_left",
    "preferences_per_prompt",
    "prompt_token_ids",
    "render_prompts",
    "sequence_logprobs",
    "sequence_seeds",
]
