"""Load on loopback: 200 concurrent requests with mixed preferences and seeds against a Rewarded Soup of tiny
adapters. Every request is answered once, with the answer the same request gets when served alone."""

from __future__ import annotations

import asyncio
from collections import Counter

import openai
import pytest
from serving import make_adapters, tiny_soup

from paretoalign.core.preference import Preference
from paretoalign.generation import GenerationConfig
from paretoalign.interfaces.server import BackgroundServer, ServerSettings, create_app, describe_policy

REQUESTS = 200
MAX_TOKENS = 10
PROMPTS = [f"Question {i}: tell me one thing about the number {i}." for i in range(40)]
PREFERENCES = [{"conciseness": 1.0, "informativeness": 0.0}, "conciseness=0.7,informativeness=0.3",
               {"conciseness": 0.3, "informativeness": 0.7}, "informativeness=1"]
SEEDS = (11, 12)


def request(i: int) -> tuple[str, object, int]:
    """Request i: prompt, preference, seed; requests 0, 80 and 160 (and so on) are the same request."""
    return PROMPTS[i % len(PROMPTS)], PREFERENCES[i % len(PREFERENCES)], SEEDS[(i // len(PROMPTS)) % len(SEEDS)]


@pytest.fixture(scope="module")
def soup_server(tiny_model_dir, tmp_path_factory):
    soup = tiny_soup(tiny_model_dir, make_adapters(tiny_model_dir, tmp_path_factory.mktemp("adapters")))
    app = create_app([describe_policy("soup", soup)], ServerSettings(max_batch_size=32, batch_wait_ms=50))
    with BackgroundServer(app) as server:
        yield server, soup, app.state.engines["soup"]


async def _ask_all(url: str) -> list:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)

    async def ask(i: int):
        prompt, preference, seed = request(i)
        return await client.chat.completions.create(
            model="soup", messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS, seed=seed,
            extra_body={"preference": preference})

    try:
        return await asyncio.gather(*(ask(i) for i in range(REQUESTS)))
    finally:
        await client.close()


def _alone(soup, i: int) -> str:
    prompt, preference, seed = request(i)
    config = GenerationConfig(max_new_tokens=MAX_TOKENS, temperature=1.0, seed=seed)
    return soup.generate([prompt], Preference.parse(preference, normalize=True), config)[0].text


def test_200_concurrent_mixed_requests_each_get_their_answer_alone(soup_server):
    server, soup, engine = soup_server
    answers = asyncio.run(_ask_all(server.url))
    assert len(answers) == REQUESTS
    assert len({answer.id for answer in answers}) == REQUESTS  # none lost, none answered twice
    assert engine.batches <= REQUESTS // 4  # they were batched, not served one by one
    keys = [repr(request(i)) for i in range(REQUESTS)]  # identical requests (0, 80, 160, ...) must agree too
    assert max(Counter(keys).values()) == 3
    distinct = sorted({key: i for i, key in enumerate(keys)}.items(), key=lambda item: str(request(item[1])[1]))
    expected = {key: _alone(soup, i) for key, i in distinct}  # sorted by preference: one merge per preference
    assert [answer.choices[0].message.content for answer in answers] == [expected[key] for key in keys]
    weights = [answer.model_dump()["preference_applied"]["weights"] for answer in answers]
    assert weights == [Preference.parse(request(i)[1], normalize=True).as_dict() for i in range(REQUESTS)]


def test_a_request_served_alone_by_the_server_matches_too(soup_server):
    server, soup, _ = soup_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    for i in (0, 7, 121):
        prompt, preference, seed = request(i)
        answer = client.chat.completions.create(model="soup", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=MAX_TOKENS, seed=seed, extra_body={"preference": preference})
        assert answer.choices[0].message.content == _alone(soup, i)
