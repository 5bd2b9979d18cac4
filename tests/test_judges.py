"""Pairwise judges: criteria, un-swapping, win rates, the objectives judge, the local-LM judge on a tiny
model, and the API judge against real HTTP servers on loopback."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paretoalign.core.errors import ConfigError, JudgeError
from paretoalign.objectives import (
    PREFERENCE_DIMENSIONS,
    ApiJudge,
    Judge,
    LocalJudge,
    ObjectiveJudge,
    Verdict,
    load_judge,
    resolve_criterion,
    win_rate,
)
from paretoalign.objectives.judges import Reading, parse_answer, swap_order

PROMPTS = [f"Question number {i}: why is the sky blue?" for i in range(16)]
ANSWERS_A = [f"Because air scatters blue light ({i})." for i in range(16)]
ANSWERS_B = [f"The sky is blue due to Rayleigh scattering of sunlight ({i})." for i in range(16)]


# --- criteria and win rates ---------------------------------------------------------------------------


def test_dimension_names_resolve_to_their_texts_and_free_text_passes_through():
    assert resolve_criterion("P2A").text == PREFERENCE_DIMENSIONS["P2A"]
    assert resolve_criterion("p3b").name == "P3B"
    assert resolve_criterion(PREFERENCE_DIMENSIONS["P1B"]).name == "P1B"
    free = resolve_criterion("The more helpful answer.")
    assert (free.name, free.text) == (None, "The more helpful answer.")


def test_unknown_dimension_lists_the_known_ones():
    with pytest.raises(ConfigError, match="P1A, P1B, P2A, P2B, P3A, P3B"):
        resolve_criterion("P4A")


def test_win_rate_counts_ties_half_with_a_wilson_interval():
    result = win_rate(["a"] * 6 + ["b"] * 2 + ["tie"] * 2)
    assert (result.wins, result.losses, result.ties, result.count) == (6, 2, 2, 10)
    assert result.rate == pytest.approx(0.7)
    # Wilson score interval at 95% for 7 of 10.
    assert (result.low, result.high) == (pytest.approx(0.3968, abs=1e-4), pytest.approx(0.8922, abs=1e-4))
    assert win_rate(["a"] * 5).high == 1.0 and win_rate(["a"] * 5).low > 0.5


def test_win_rate_rejects_empty_and_unknown_verdicts():
    with pytest.raises(ConfigError, match="no verdicts"):
        win_rate([])
    with pytest.raises(ConfigError, match="'first'"):
        win_rate(["a", "first"])


# --- order randomization and un-swapping --------------------------------------------------------------


class FirstPositionJudge(Judge):
    """Always prefers whatever it is shown first (or calls every pair a tie), with probability 0.9."""

    name = "first"

    def __init__(self, seed: int = 0, choice: str = "first") -> None:
        super().__init__(seed)
        self.choice = choice

    def read(self, prompts, firsts, seconds, criterion):
        return [Reading(self.choice, 0.9, f"{first} | {second}", self.choice) for first, second in zip(firsts, seconds)]


def test_order_is_a_seeded_coin_per_pair():
    swaps = [swap_order(0, p, a, b) for p, a, b in zip(PROMPTS, ANSWERS_A, ANSWERS_B)]
    assert 3 <= sum(swaps) <= 13
    assert swaps == [swap_order(0, p, a, b) for p, a, b in zip(PROMPTS, ANSWERS_A, ANSWERS_B)]
    assert swaps != [swap_order(1, p, a, b) for p, a, b in zip(PROMPTS, ANSWERS_A, ANSWERS_B)]


def test_a_judge_preferring_position_one_is_unswapped():
    verdicts = FirstPositionJudge().compare(PROMPTS, ANSWERS_A, ANSWERS_B, "P1A")
    assert any(v.swapped for v in verdicts) and not all(v.swapped for v in verdicts)
    for verdict, a, b in zip(verdicts, ANSWERS_A, ANSWERS_B):
        assert verdict.verdict == ("b" if verdict.swapped else "a")
        assert verdict.probability == pytest.approx(0.1 if verdict.swapped else 0.9)
        assert verdict.prompt == (f"{b} | {a}" if verdict.swapped else f"{a} | {b}")
    # Half the pairs shown each way: the position bias cancels in the win rate.
    assert win_rate(verdicts).rate == pytest.approx(1 - sum(v.swapped for v in verdicts) / len(verdicts))


def test_ties_stay_ties_whichever_order():
    verdicts = FirstPositionJudge(choice="tie").compare(PROMPTS, ANSWERS_A, ANSWERS_B, "free text")
    assert {v.verdict for v in verdicts} == {"tie"}
    assert {v.swapped for v in verdicts} == {True, False}


def test_compare_checks_lengths_and_verdicts_round_trip():
    with pytest.raises(ConfigError, match="one of each per pair"):
        FirstPositionJudge().compare(PROMPTS, ANSWERS_A, ANSWERS_B[:3], "P1A")
    assert FirstPositionJudge().compare([], [], [], "P1A") == []
    verdict = FirstPositionJudge().compare(PROMPTS[:1], ANSWERS_A[:1], ANSWERS_B[:1], "P1A")[0]
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict()))) == verdict


# --- the objectives judge -----------------------------------------------------------------------------

SHORT = "Paris."
LONG = "The capital of France, a country in western Europe with a long history, is the city of Paris."
SIMPLE = "The sun is hot. It gives us light. We see it in the day."
HARD = "Photospheric emission originates from thermonuclear fusion, predominantly proton-proton chain reactions."
FRIENDLY = "Happy to help, friend! Great question, thanks so much for asking."
RUDE = "That is a stupid question. I hate answering it. Terrible."


@pytest.mark.parametrize(
    "criterion, better, worse",
    [
        ("P1A", SIMPLE, HARD),
        ("P1B", HARD, SIMPLE),
        ("P2A", SHORT, LONG),
        ("P2B", LONG, SHORT),
        ("P3A", FRIENDLY, RUDE),
        ("P3B", RUDE, FRIENDLY),
    ],
)
def test_objectives_judge_maps_each_dimension_to_its_objective(criterion, better, worse):
    verdicts = ObjectiveJudge().compare(["Tell me."] * 2, [better, worse], [worse, better], criterion)
    assert [v.verdict for v in verdicts] == ["a", "b"]
    assert all(v.probability is None and v.judge == "objectives" for v in verdicts)
    assert verdicts[0].prompt.startswith(f"{criterion}: objective ")
    assert "first=" in verdicts[0].raw and "second=" in verdicts[0].raw


def test_objectives_judge_ties_within_tolerance_and_takes_objective_names():
    almost = "The capital of France is the city of Paris."
    assert ObjectiveJudge(tolerance=1).compare(["Q"], [SHORT + " Yes."], [SHORT], "P2A")[0].verdict == "tie"
    assert ObjectiveJudge().compare(["Q"], [SHORT], [SHORT], "P2A")[0].verdict == "tie"
    assert ObjectiveJudge().compare(["Q"], [almost], [LONG], "length_cost?budget=5")[0].verdict == "a"


def test_objectives_judge_refuses_free_text():
    with pytest.raises(ConfigError, match="use the local or api judge"):
        ObjectiveJudge().compare(["Q"], ["a"], ["b"], "Which is more helpful? The one that answers")


# --- the local-LM judge on a tiny model ---------------------------------------------------------------


def _rendered_logps(tiny, text):
    """log π(A), log π(B) after one rendered judge prompt, unbatched: the oracle for the batched judge."""
    import torch

    model, tokenizer = tiny
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
    a, b = (tokenizer.encode(letter, add_special_tokens=False)[0] for letter in "AB")
    return logps[a].item(), logps[b].item()


def test_local_judge_probability_is_the_two_token_softmax_after_the_chat_template(tiny):
    import math

    judge = LocalJudge(tiny, both_orders=False, batch_size=3)
    verdicts = judge.compare(PROMPTS[:5], ANSWERS_A[:5], ANSWERS_B[:5], "P2A")
    for verdict in verdicts:
        assert verdict.prompt.startswith("<|im_start|>system\n") and verdict.prompt.endswith("<|im_start|>assistant\n")
        assert PREFERENCE_DIMENSIONS["P2A"] in verdict.prompt
        logp_a, logp_b = _rendered_logps(tiny, verdict.prompt)
        p_first = 1 / (1 + math.exp(logp_b - logp_a))
        assert verdict.probability == pytest.approx(1 - p_first if verdict.swapped else p_first, abs=1e-4)
        assert verdict.verdict == ("a" if verdict.probability > 0.5 else "b")
        assert verdict.raw == f"logp(A)={logp_a:.4f} logp(B)={logp_b:.4f}"


def test_local_judge_batches_like_one_at_a_time_and_both_orders_is_symmetric(tiny):
    batched = LocalJudge(tiny, batch_size=4).compare(PROMPTS[:6], ANSWERS_A[:6], ANSWERS_B[:6], "P1A")
    single = LocalJudge(tiny, batch_size=1).compare(PROMPTS[:6], ANSWERS_A[:6], ANSWERS_B[:6], "P1A")
    reversed_ = LocalJudge(tiny, batch_size=4).compare(PROMPTS[:6], ANSWERS_B[:6], ANSWERS_A[:6], "P1A")
    for one, other, rev in zip(batched, single, reversed_):
        assert one.probability == pytest.approx(other.probability, abs=1e-4)
        assert one.probability == pytest.approx(1 - rev.probability, abs=1e-5)
        assert "reversed order" in one.prompt and "; reversed: logp(A)=" in one.raw


def test_local_judge_margin_makes_close_calls_ties(tiny):
    verdicts = LocalJudge(tiny, margin=0.49).compare(PROMPTS[:4], ANSWERS_A[:4], ANSWERS_B[:4], "P3A")
    assert {v.verdict for v in verdicts} == {"tie"}
    with pytest.raises(ConfigError, match="margin"):
        LocalJudge(tiny, margin=0.5)


# --- the API judge against real servers on loopback ---------------------------------------------------


class Server:
    """A real HTTP server on 127.0.0.1 in a thread; ``answer(body, count)`` gives (status, headers, bytes)."""

    def __init__(self, answer, delay: float = 0.0) -> None:
        self.answer, self.delay = answer, delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    count = len(outer.requests)
                time.sleep(outer.delay)
                try:
                    status, headers, payload = outer.answer(body, count)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(content: str) -> tuple[int, dict, bytes]:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "judge",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def always(content: str):
    return lambda body, count: completion(content)


def api_judge(server: Server, **options) -> ApiJudge:
    return ApiJudge("judge", base_url=server.url, api_key_env=None, **{"max_retries": 1, **options})


@pytest.fixture()
def tiny_chat_server(tiny):
    """A chat-completions endpoint answering greedily with the tiny model."""
    model, tokenizer = tiny
    lock = threading.Lock()

    def answer(body, count):
        ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt")
        with lock:
            out = model.generate(**ids, max_new_tokens=body["max_tokens"], do_sample=False)
        return completion(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))

    with Server(answer) as server:
        yield server


def test_api_judge_against_a_live_tiny_model_server_with_key_and_cache(tiny_chat_server, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-secret-123")
    url, cache = tiny_chat_server.url, tmp_path / "cache"
    judge = ApiJudge("judge", base_url=url, api_key_env="JUDGE_TEST_KEY", cache_dir=cache, concurrency=2)
    verdicts = judge.compare(PROMPTS[:4], ANSWERS_A[:4], ANSWERS_B[:4], "P3A")
    assert len(tiny_chat_server.requests) == 4
    assert all(h["authorization"] == "Bearer sk-secret-123" for h in tiny_chat_server.headers)
    for verdict, request in zip(verdicts, tiny_chat_server.requests):
        assert verdict.verdict in ("a", "b", "tie") and verdict.judge == f"api:judge@{tiny_chat_server.url}"
        position = parse_answer(verdict.raw)
        assert verdict.verdict == ("tie" if position == "tie" else "ab"[(position == "second") != verdict.swapped])
        assert PREFERENCE_DIMENSIONS["P3A"] in json.loads(verdict.prompt)[0]["content"]
        assert request["model"] == "judge" and request["temperature"] == 0.0
    assert sorted(v.raw for v in verdicts) == sorted(
        json.loads(p.read_text())["answer"] for p in (tmp_path / "cache").rglob("*.json")
    )
    again = judge.compare(PROMPTS[:4], ANSWERS_A[:4], ANSWERS_B[:4], "P3A")
    assert again == verdicts and len(tiny_chat_server.requests) == 4
    assert not any("sk-secret-123" in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_api_judge_unswaps_a_server_that_always_answers_output_a(tmp_path):
    with Server(always("Output (a)")) as server:
        verdicts = api_judge(server).compare(PROMPTS, ANSWERS_A, ANSWERS_B, "P2A")
    assert {v.swapped for v in verdicts} == {True, False}
    assert all(v.verdict == ("b" if v.swapped else "a") and v.raw == "Output (a)" for v in verdicts)


@pytest.mark.parametrize(
    "status, headers, least_wait",
    [(429, {"retry-after-ms": "20"}, 0.02), (503, {}, 0.5 * 0.75)],  # the server's delay; else backoff 0.5 s - 25%
)
def test_api_judge_retries_after_429_and_5xx(status, headers, least_wait):
    times = []

    def answer(body, count):
        times.append(time.monotonic())
        if count == 1:
            return status, {"Content-Type": "application/json", **headers}, b'{"error": {"message": "busy"}}'
        return completion("Output (b)")

    with Server(answer) as server:
        verdict = api_judge(server).compare(PROMPTS[:1], ANSWERS_A[:1], ANSWERS_B[:1], "P1A")[0]
    assert len(server.requests) == 2 and times[1] - times[0] >= least_wait
    assert verdict.verdict == ("a" if verdict.swapped else "b")


def test_api_judge_keeps_to_its_concurrency_bound():
    with Server(always("Output (a)"), delay=0.2) as server:
        api_judge(server, concurrency=2).compare(PROMPTS[:6], ANSWERS_A[:6], ANSWERS_B[:6], "P1A")
    assert len(server.requests) == 6 and server.max_in_flight == 2


def test_api_judge_refused_connection_is_a_clear_error_and_caches_nothing(tmp_path):
    with Server(always("Output (a)")) as server:
        url = server.url
    judge = ApiJudge("judge", base_url=url, api_key_env=None, max_retries=1, cache_dir=tmp_path / "cache")
    with pytest.raises(JudgeError, match=r"failed \(APIConnectionError: .*\) with up to 1 retries") as error:
        judge.compare(PROMPTS[:2], ANSWERS_A[:2], ANSWERS_B[:2], "P1A")
    assert "\n" not in str(error.value)
    assert not list(tmp_path.rglob("*.json"))


def test_api_judge_non_json_answer_is_a_clear_error_and_caches_nothing(tmp_path):
    with Server(lambda body, count: (200, {"Content-Type": "text/html"}, b"<html>not an API</html>")) as server:
        with pytest.raises(JudgeError, match="not a chat completion"):
            api_judge(server, cache_dir=tmp_path / "cache").compare(PROMPTS[:2], ANSWERS_A[:2], ANSWERS_B[:2], "P1A")
    assert not list(tmp_path.rglob("*.json"))


def test_api_judge_times_out():
    with Server(always("Output (a)"), delay=1.0) as server:
        with pytest.raises(JudgeError, match="APITimeoutError"):
            api_judge(server, timeout=0.2, max_retries=0).compare(PROMPTS[:1], ANSWERS_A[:1], ANSWERS_B[:1], "P1A")


def test_api_judge_needs_its_key_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    judge = ApiJudge("judge", base_url="http://127.0.0.1:9/v1", api_key_env="NO_SUCH_JUDGE_KEY")
    with pytest.raises(ConfigError, match="NO_SUCH_JUDGE_KEY holds no API key"):
        judge.compare(PROMPTS[:1], ANSWERS_A[:1], ANSWERS_B[:1], "P1A")


def test_answers_parse_to_positions():
    assert parse_answer("Output (a)") == "first"
    assert parse_answer("output (B), because it is shorter") == "second"
    assert parse_answer(" b. ") == "second"
    assert parse_answer("Both are fine.") == "tie"


# --- specs --------------------------------------------------------------------------------------------


def test_load_judge_specs():
    assert isinstance(load_judge(), ObjectiveJudge)
    assert load_judge("objectives?tolerance=2").tolerance == 2
    api = load_judge("api:gpt-4o?base_url=http://127.0.0.1:8000/v1&api_key_env=null&concurrency=8")
    assert (api.name, api.api_key_env, api.concurrency) == ("api:gpt-4o@http://127.0.0.1:8000/v1", None, 8)
    assert load_judge("local:/some/model?batch_size=2", margin=0.1).name == "local:/some/model"
    with pytest.raises(ConfigError, match="unknown judge 'gpt'"):
        load_judge("gpt")
    with pytest.raises(ConfigError, match="has no option 'batch'; its options: batch_size"):
        load_judge("local?batch=2")


# --- the embedded model as judge ----------------------------------------------------------------------

# (criterion, prompt, the obviously better answer, the worse one)
OBVIOUS_PAIRS = [
    ("P1A", "Why is the sky blue?",
     "Sunlight has all colors in it. The air bounces blue light around the most, so we see blue everywhere.",
     "The chromatic appearance arises from Rayleigh scattering, whose cross-section scales with the inverse fourth "
     "power of wavelength, preferentially redirecting shorter-wavelength electromagnetic radiation."),
    ("P1A", "What do plants need to grow?",
     "Plants need sun, water, air and dirt. That is how they make food and get big.",
     "Autotrophic growth necessitates photosynthetically active radiation, adequate hydration, atmospheric carbon "
     "dioxide assimilation and edaphic macronutrient availability."),
    ("P2A", "What is the capital of France?", "Paris.",
     "Well, that is a really interesting question, and there is a lot to say about it. France is a country in Europe "
     "with a long history, many regions and cities, and after thinking about all of this for a while, "
     "the capital is Paris."),
    ("P2A", "How many days are in a week?", "Seven.",
     "A week, which is a unit of time used all around the world in many calendars and cultures for thousands of years, "
     "is made up of a number of days, and that number, if we count them carefully one by one, is seven."),
    ("P3A", "Can you help me with my homework?",
     "Of course, friend! I'd love to help, homework is way more fun together. What are we tackling today?",
     "No. Do it yourself. I am not here to do your work."),
    ("P3A", "I failed my driving test today.",
     "Oh no, I'm sorry, buddy! Lots of great drivers fail the first time. You'll ace it next time, "
     "and I'll cheer for you!",
     "That is your fault. You should have practiced more. Failing is what happens to careless people."),
    ("P2B", "What is photosynthesis?",
     "Photosynthesis is the process plants, algae and some bacteria use to turn light into chemical energy. In the "
     "chloroplasts, chlorophyll absorbs sunlight; that energy splits water, releasing oxygen, and drives the Calvin "
     "cycle, which fixes carbon dioxide into sugars the plant uses to grow.",
     "Plants make food."),
    ("P3B", "Can you tell me the time in Tokyo?",
     "Ugh, look it up yourself. I'm not your clock, and honestly it's a lazy question.",
     "Happy to help! Tokyo is on Japan Standard Time, nine hours ahead of UTC, so add nine hours to UTC to get it."),
    ("Give the correct answer.", "What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
    ("Give the correct answer.", "What is the largest planet in our solar system?",
     "Jupiter is the largest planet in our solar system.", "Mars is the largest planet in our solar system."),
]


def _p_first(raw: str) -> float:
    """P(first shown is better) from a local judge's ``logp(A)=... logp(B)=...``."""
    import math

    logp_a, logp_b = (float(part.split("=")[1]) for part in raw.split())
    return 1 / (1 + math.exp(logp_b - logp_a))


@pytest.mark.integration
def test_embedded_model_as_judge_on_obvious_pairs():
    """The embedded SmolLM2-135M as local judge, in both orders (the default). Measured: in one order it
    prefers whatever is shown first (mean probability 0.67), so single-order verdicts follow the coin;
    averaging both orders cancels that, and what is left picks the obviously better answer on 6 of 10
    pairs with probabilities within 0.06 of 0.5: a 135M model is no judge. The test pins the position bias,
    its cancellation and that floor; a capable judge is an API or a larger local model."""
    judge = LocalJudge()
    verdicts = []
    for criterion in dict.fromkeys(pair[0] for pair in OBVIOUS_PAIRS):
        _, prompts, better, worse = zip(*(pair for pair in OBVIOUS_PAIRS if pair[0] == criterion))
        verdicts += judge.compare(prompts, better, worse, criterion)
    p_first = []
    for verdict in verdicts:
        shown, reversed_ = (_p_first(raw.strip()) for raw in verdict.raw.split("; reversed:"))
        p_first += [shown, reversed_]
        p_a = (shown + 1 - reversed_) / 2
        assert verdict.probability == pytest.approx(1 - p_a if verdict.swapped else p_a, abs=1e-4)
    accuracy = sum(v.verdict == "a" for v in verdicts) / len(verdicts)
    print(f"embedded judge: accuracy {accuracy:.2f}, mean p(first shown) {sum(p_first) / len(p_first):.3f}")
    assert sum(p_first) / len(p_first) > 0.6
    assert accuracy >= 0.5
