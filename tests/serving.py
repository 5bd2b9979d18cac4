"""Real policies on tiny real models for the server tests: a Rewarded Soup of two random LoRA adapters, the base
model, and prompting; plus a policy that waits at a gate (to fill the queue on purpose)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paretoalign.generation import BasePolicy
from paretoalign.methods.prompting import PromptingPolicy
from paretoalign.methods.soups import SoupPolicy
from paretoalign.models import attach_lora, save_adapter

SOUP_OBJECTIVES = ("conciseness", "informativeness")


def load_tiny(model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    return model, tokenizer


def make_adapters(model_dir: Path, out: Path) -> dict[str, Path]:
    """One random LoRA adapter per soup objective (as if trained), saved as PEFT folders."""
    folders = {}
    for seed, objective in enumerate(SOUP_OBJECTIVES):
        model, _ = load_tiny(model_dir)
        model = attach_lora(model, "default", r=4, alpha=8)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        folders[objective] = save_adapter(model, "default", out / objective)
    return folders


def tiny_soup(model_dir: Path, adapters: dict[str, Path]) -> SoupPolicy:
    model, tokenizer = load_tiny(model_dir)
    return SoupPolicy(model, tokenizer, adapters)


def tiny_base(model_dir: Path) -> BasePolicy:
    return BasePolicy(*load_tiny(model_dir))


def tiny_prompting(model_dir: Path) -> PromptingPolicy:
    return PromptingPolicy(*load_tiny(model_dir))


class GatedPolicy(BasePolicy):
    """The tiny base model, but each ``generate`` first waits until the test opens ``gate`` (and counts calls)."""

    def __init__(self, model, tokenizer) -> None:
        super().__init__(model, tokenizer, name="gated")
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls = 0

    def generate(self, prompts, preference, config):
        self.calls += 1
        self.entered.release()
        self.gate.wait(timeout=60)
        return super().generate(prompts, preference, config)


class BrokenPolicy(BasePolicy):
    """A policy with a bug: every call raises a plain RuntimeError (the server must answer 500, not a traceback)."""

    def generate(self, prompts, preference, config):
        raise RuntimeError("secret internal detail")


class PickyPolicy(BasePolicy):
    """The tiny base model refusing (one-line ConfigError) any batch with a prompt that says "forbidden"."""

    def generate(self, prompts, preference, config):
        from paretoalign.core.errors import ConfigError

        if any("forbidden" in prompt for prompt in prompts):
            raise ConfigError("this policy does not answer forbidden prompts; ask something else")
        return super().generate(prompts, preference, config)


class Reply:
    """A raw HTTP reply: status, headers (case-insensitive ``get``) and body."""

    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, body=None, timeout: float = 30) -> Reply:
    """One raw request with the standard library (for what the openai client will not send: bad JSON, no key)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


class MixingPrompting(PromptingPolicy):
    """Prompting, declared able to answer rows with different preferences in one batch (it writes each row's
    preference into that row's prompt), so the server batches mixed preferences together."""

    mixes_preferences = True
