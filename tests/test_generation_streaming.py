"""The per-step listener of ``generate``: what the server streams token by token."""

from collections import defaultdict

from paretoalign.generation import GenerationConfig, generate
from paretoalign.generation.sampling import listen_to_steps


def test_listener_sees_every_token_of_every_prompt_in_order(tiny):
    model, tokenizer = tiny
    prompts = ["Tell me about the sea.", "Hi", "Explain photosynthesis to a child in simple words please."]
    config = GenerationConfig(max_new_tokens=12, seed=3, batch_size=2)
    heard: dict[int, list[int]] = defaultdict(list)

    def listener(call_prompts, indices, tokens):
        assert list(call_prompts) == prompts
        for index, token in zip(indices, tokens):
            heard[index].append(token)

    with listen_to_steps(listener):
        responses = generate(model, tokenizer, prompts, config)
    assert {i: heard[i] for i in range(len(prompts))} == {i: r.token_ids for i, r in enumerate(responses)}
    assert responses == generate(model, tokenizer, prompts, config)  # listening changes nothing


def test_no_listener_outside_the_block(tiny):
    model, tokenizer = tiny
    heard = []
    with listen_to_steps(lambda *args: heard.append(args)):
        pass
    generate(model, tokenizer, ["Hi"], GenerationConfig(max_new_tokens=3, seed=0))
    assert heard == []


def test_decoding_over_any_scorer_streams_too(tiny):
    """MOD and MAVIS decode through generate_with_scorer: the server streams them token by token as well."""
    from paretoalign.generation.beam import generate_with_scorer
    from paretoalign.generation.decoding import CausalLMScorer, eos_token_ids

    model, tokenizer = tiny
    prompts = ["Tell me about the sea.", "Hi"]
    config = GenerationConfig(max_new_tokens=8, seed=5)
    heard: dict[int, list[int]] = defaultdict(list)

    def listener(call_prompts, indices, tokens):
        for index, token in zip(indices, tokens):
            heard[index].append(token)

    with listen_to_steps(listener):
        responses = generate_with_scorer(lambda: CausalLMScorer(model), tokenizer, prompts, config,
                                         eos_ids=eos_token_ids(model, tokenizer), device=model.device)
    assert {i: heard[i] for i in range(len(prompts))} == {i: r.token_ids for i, r in enumerate(responses)}
