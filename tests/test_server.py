"""The OpenAI-compatible server on loopback, with the official ``openai`` client as the test client, serving
real policies on a tiny real model: answers equal the policy's own offline answers with the same seed."""

from __future__ import annotations

import re
import threading
import time

import openai
import pytest
from serving import (SOUP_OBJECTIVES, BrokenPolicy, GatedPolicy, MixingPrompting, PickyPolicy, http, load_tiny,
                     make_adapters, tiny_base, tiny_prompting, tiny_soup)

from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig
from paretoalign.generation.chat import prompt_token_ids
from paretoalign.interfaces.server import BackgroundServer, ServerSettings, create_app, describe_policy
from paretoalign.objectives import get_objective

PROMPT = "Write a short poem about the sea."
PREFERENCE = {"conciseness": 0.7, "informativeness": 0.3}


def offline(policy, prompts, preference, max_tokens, seed, **config):
    """What the policy itself answers for the same request (the oracle)."""
    preference = Preference.parse(preference) if preference is not None else None
    settings = GenerationConfig(max_new_tokens=max_tokens, temperature=1.0, top_p=1.0, seed=seed, **config)
    return policy.generate(list(prompts), preference, settings)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    return make_adapters(tiny_model_dir, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="module")
def served(tiny_model_dir, adapters):
    policies = {"soup": tiny_soup(tiny_model_dir, adapters), "base": tiny_base(tiny_model_dir),
                "prompting": tiny_prompting(tiny_model_dir), "broken": BrokenPolicy(*load_tiny(tiny_model_dir)),
                "picky": PickyPolicy(*load_tiny(tiny_model_dir))}
    models = [describe_policy(name, policy) for name, policy in policies.items()]
    settings = ServerSettings(max_tokens_cap=64, max_request_bytes=8192, batch_wait_ms=50)
    with BackgroundServer(create_app(models, settings)) as server:
        yield server, policies


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served[0].url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client, model="soup", prompt=PROMPT, **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **options)


def test_models_lists_each_model_with_method_objectives_and_default(client):
    cards = {card.id: card.model_dump() for card in client.models.list()}
    assert list(cards) == ["soup", "base", "prompting", "broken", "picky"]
    soup = cards["soup"]
    assert soup["method"] == "soups" and soup["owned_by"] == "paretoalign"
    assert [o["name"] for o in soup["objectives"]] == list(SOUP_OBJECTIVES)
    concise, informative = soup["objectives"]
    assert concise["direction"] == "lower is better" and informative["direction"] == "higher is better"
    assert concise["description"] and concise["unit"] == "words"
    assert soup["default_preference"] == {"conciseness": 0.5, "informativeness": 0.5}
    assert cards["base"]["objectives"] == [] and cards["base"]["default_preference"] is None
    assert client.models.retrieve("soup").id == "soup"


def test_chat_with_a_preference_answers_what_the_policy_answers_offline(client, served):
    response = chat(client, max_tokens=12, seed=5, extra_body={"preference": PREFERENCE})
    (expected,) = offline(served[1]["soup"], [PROMPT], PREFERENCE, 12, 5)
    choice = response.choices[0]
    assert choice.message.content == expected.text and choice.message.role == "assistant"
    assert choice.finish_reason == {"eos": "stop", "stop": "stop", "length": "length"}[expected.finish_reason]
    tokenizer = served[1]["soup"].tokenizer
    assert response.usage.prompt_tokens == len(prompt_token_ids(tokenizer, [PROMPT])[0])
    assert response.usage.completion_tokens == len(expected.token_ids)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    applied = response.model_dump()["preference_applied"]
    assert applied["weights"] == pytest.approx(PREFERENCE) and applied["source"] == "request"
    assert applied["steering"]["merge_weights"] == pytest.approx(PREFERENCE)


def test_the_string_form_and_unnormalized_weights_mean_the_same(client):
    as_dict = chat(client, max_tokens=10, seed=2, extra_body={"preference": PREFERENCE})
    as_text = chat(client, max_tokens=10, seed=2, extra_body={"preference": "conciseness=7,informativeness=3"})
    assert as_text.choices[0].message.content == as_dict.choices[0].message.content
    assert as_text.model_dump()["preference_applied"]["weights"] == pytest.approx(PREFERENCE)


def test_no_preference_uses_the_default_and_base_ignores_preferences(client, served):
    default = chat(client, max_tokens=8, seed=4)
    assert default.model_dump()["preference_applied"]["source"] == "default"
    (expected,) = offline(served[1]["soup"], [PROMPT], {"conciseness": 0.5, "informativeness": 0.5}, 8, 4)
    assert default.choices[0].message.content == expected.text
    base = chat(client, model="base", max_tokens=8, seed=4, extra_body={"preference": PREFERENCE})
    assert base.model_dump()["preference_applied"] == {"weights": None, "source": "ignored", "steering": None}


def test_completions_answer_each_prompt_n_times_in_order(client, served):
    prompts = ["Hi", "Give me three tips for better sleep tonight."]
    response = client.completions.create(model="soup", prompt=prompts, n=2, max_tokens=8, seed=9,
                                         extra_body={"preference": PREFERENCE})
    expected = offline(served[1]["soup"], [p for p in prompts for _ in range(2)], PREFERENCE, 8, 9)
    assert response.object == "text_completion"
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    assert [c.text for c in response.choices] == [e.text for e in expected]
    assert response.choices[0].text != response.choices[1].text  # n answers are n samples


def test_streaming_sends_the_answer_token_by_token(client):
    full = chat(client, max_tokens=16, seed=3, extra_body={"preference": PREFERENCE}).choices[0].message.content
    chunks = list(chat(client, max_tokens=16, seed=3, stream=True, stream_options={"include_usage": True},
                       extra_body={"preference": PREFERENCE}))
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == full and len(deltas) >= 4
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.model_dump()["preference_applied"]["weights"] == pytest.approx(PREFERENCE)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= len(deltas)


def test_streamed_completions_and_stop_strings_end_where_the_full_answer_ends(client):
    plain = client.completions.create(model="base", prompt=PROMPT, max_tokens=24, seed=1).choices[0].text
    stop = re.search(r"[A-Za-z]{2}", plain[4:]).group()  # a stop string the answer reaches after a few tokens
    cut = client.completions.create(model="base", prompt=PROMPT, max_tokens=24, seed=1, stop=[stop])
    assert cut.choices[0].text == plain[: plain.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="base", prompt=PROMPT, max_tokens=24, seed=1, stop=[stop], stream=True)
    pieces = list(streamed)
    assert "".join(c.choices[0].text for c in pieces if c.choices) == cut.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_return_scores_gives_each_objectives_score_of_the_answer(client):
    response = chat(client, max_tokens=12, seed=6, extra_body={"preference": PREFERENCE, "return_scores": True})
    choice = response.choices[0].model_dump()
    text = choice["message"]["content"]
    for name in SOUP_OBJECTIVES:
        objective = get_objective(name)
        assert choice["scores"][name] == pytest.approx(float(objective.orient(objective.score([PROMPT], [text]))[0]))
    assert choice["raw_scores"]["conciseness"] == {"words": pytest.approx(-choice["scores"]["conciseness"])}


@pytest.mark.parametrize("preference, named", [
    ({"helpfulness": 1.0}, "helpfulness"),
    ({"conciseness": -0.5, "informativeness": 1.5}, "negative"),
    ({"conciseness": "lots", "informativeness": 0.5}, "lots"),
    ("conciseness=0.5,oops", "oops"),
    ({"conciseness": 0, "informativeness": 0}, "all weights are 0"),
])
def test_a_bad_preference_is_a_400_that_names_the_bad_part(client, preference, named):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, max_tokens=4, extra_body={"preference": preference})
    error = caught.value.body
    assert error["param"] == "preference" and error["type"] == "invalid_request_error" and named in error["message"]


def test_errors_use_the_openai_shape(client, served):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, model="nope")
    assert caught.value.body["code"] == "model_not_found" and "soup" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="at most 64"):
        chat(client, max_tokens=65)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        chat(client, temperature=3)
    with pytest.raises(openai.BadRequestError, match="one user message"):
        client.chat.completions.create(model="soup", messages=[
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "?"}])
    with pytest.raises(openai.BadRequestError, match="tool calls"):
        chat(client, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.BadRequestError, match="context of 512 tokens"):
        chat(client, prompt="sea " * 500, max_tokens=8)
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client, prompt="x" * 9000)
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client, model="broken")
    assert "secret" not in str(caught.value.body) and caught.value.body["type"] == "server_error"
    raw = http("POST", served[0].url + "/v1/chat/completions", b"{not json")
    assert raw.status == 422 and raw.json()["error"]["message"] == "the request body is not valid JSON"
    missing = http("POST", served[0].url + "/v1/chat/completions", {"model": "soup"})
    assert missing.status == 422 and missing.json()["error"]["param"] == "messages"


def test_a_request_the_policy_refuses_fails_alone_in_its_batch(client, served):
    results: dict[str, object] = {}

    def ask(prompt):
        try:
            results[prompt] = chat(client, model="picky", prompt=prompt, max_tokens=6, seed=1)
        except openai.BadRequestError as error:
            results[prompt] = error

    prompts = ["Hi", "a forbidden question", "How do I cook rice?"]
    threads = [threading.Thread(target=ask, args=(prompt,)) for prompt in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(results["a forbidden question"], openai.BadRequestError)
    assert "forbidden prompts" in results["a forbidden question"].body["message"]
    for prompt in ("Hi", "How do I cook rice?"):
        (expected,) = offline(served[1]["picky"], [prompt], None, 6, 1)
        assert results[prompt].choices[0].message.content == expected.text


def test_the_playground_page_is_served_without_a_key(served):
    page = http("GET", served[0].url + "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"] and b"playground.js" in page.body
    assert http("GET", served[0].url + "/playground.js").status == 200


def test_an_api_key_guards_every_route_but_the_page(tiny_model_dir):
    app = create_app([describe_policy("base", tiny_base(tiny_model_dir))], ServerSettings(api_key="s3cret-key"))
    with BackgroundServer(app) as server:
        for key in ("wrong-key", "s3cret-ke"):
            wrong = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                wrong.models.list()
            assert caught.value.body["code"] == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                chat(wrong, model="base", max_tokens=2)
        right = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret-key", max_retries=0)
        assert chat(right, model="base", max_tokens=3, seed=0).choices[0].message.role == "assistant"
        bare = http("GET", server.url + "/v1/models")
        assert bare.status == 401 and bare.headers["www-authenticate"] == "Bearer"
        assert http("GET", server.url + "/health").status == 401
        assert http("GET", server.url + "/").status == 200


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_full_queue_is_503_with_retry_after_a_gone_client_frees_its_place_and_slow_requests_time_out(tiny_model_dir):
    policy = GatedPolicy(*load_tiny(tiny_model_dir))
    settings = ServerSettings(max_batch_size=1, max_queue=1, batch_wait_ms=0, request_timeout_s=2.5)
    app = create_app([describe_policy("gated", policy)], settings)
    scheduler = app.state.engines["gated"].scheduler
    body = {"model": "gated", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    results: dict[str, object] = {}

    def post(name, timeout):
        try:
            results[name] = http("POST", url, body, timeout=timeout)
        except TimeoutError as error:
            results[name] = error

    with BackgroundServer(app) as server:
        url = server.url + "/v1/chat/completions"
        running = threading.Thread(target=post, args=("running", 30))
        running.start()
        assert policy.entered.acquire(timeout=10)  # the first request is in the policy, held at the gate
        leaving = threading.Thread(target=post, args=("leaving", 0.8))
        leaving.start()
        _wait_until(lambda: len(scheduler.pending) == 1)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            chat(client, model="gated", max_tokens=4)
        assert caught.value.status_code == 503 and caught.value.body["code"] == "queue_full"
        assert int(caught.value.response.headers["retry-after"]) >= 1
        leaving.join()
        assert isinstance(results["leaving"], TimeoutError)
        _wait_until(lambda: len(scheduler.pending) == 0, timeout=5)  # the gone client's place is free again
        queued = threading.Thread(target=post, args=("queued", 30))
        queued.start()
        _wait_until(lambda: len(scheduler.pending) == 1)
        running.join()
        queued.join()
        for name in ("running", "queued"):
            assert results[name].status == 504 and results[name].json()["error"]["type"] == "timeout_error"
        policy.gate.set()
    assert policy.calls == 1  # neither the gone nor the timed-out queued request ever reached the model


def test_a_policy_that_mixes_preferences_answers_them_in_one_batch_and_streams_each(tiny_model_dir):
    policy = MixingPrompting(*load_tiny(tiny_model_dir))
    app = create_app([describe_policy("mixing", policy)], ServerSettings(batch_wait_ms=1500))
    preferences = {"simplicity=1": "Hi", "conciseness=0.8,friendliness=0.2": PROMPT, "informativeness=1": "Why?"}
    answers: dict[str, str] = {}

    def ask(preference):
        stream = chat(client, model="mixing", prompt=preferences[preference], max_tokens=10, seed=8, stream=True,
                      extra_body={"preference": preference})
        answers[preference] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with BackgroundServer(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        threads = [threading.Thread(target=ask, args=(preference,)) for preference in preferences]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert app.state.engines["mixing"].batches == 1
    for preference, prompt in preferences.items():
        (expected,) = offline(policy, [prompt], preference, 10, 8)
        assert answers[preference] == expected.text
