"""Anthropic's Messages API on ``tenfold serve`` (issue 38 item 4), through the official anthropic SDK."""
import anthropic
import httpx
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
GREEDY = {"extra_body": {"temperature": 0}}  # this SDK version no longer has a temperature argument
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server, api_key="none", max_retries=0, timeout=300)


def test_create_and_stream_agree(client):
    ask = dict(model=MODEL, max_tokens=30, system="Answer in one sentence.",
               messages=[{"role": "user", "content": "What is the capital of France?"}], **GREEDY)
    whole = client.messages.create(**ask)
    assert whole.stop_reason == "end_turn" and "Paris" in whole.content[0].text
    assert whole.usage.input_tokens > 0 and whole.usage.output_tokens > 0
    with client.messages.stream(**ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == whole.content[0].text and final.stop_reason == "end_turn"
    cut = client.messages.create(**{**ask, "max_tokens": 3})
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    assert client.messages.count_tokens(model=MODEL, system=ask["system"],
                                        messages=ask["messages"]).input_tokens == whole.usage.input_tokens


def test_stop_sequences_say_which_one_stopped(client):
    out = client.messages.create(model=MODEL, max_tokens=40, stop_sequences=["5"],
                                 messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
                                 **GREEDY)
    assert out.stop_reason == "stop_sequence" and out.stop_sequence == "5" and "5" not in out.content[0].text


def test_tool_use_round_trip(client):
    ask = dict(model=MODEL, max_tokens=40, tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Paris?"}],
               tool_choice={"type": "any", "disable_parallel_tool_use": True}, **GREEDY)
    called = client.messages.create(**ask)
    uses = [b for b in called.content if b.type == "tool_use"]
    assert called.stop_reason == "tool_use" and uses[0].name == "get_weather" and set(uses[0].input) == {"city"}
    answer = client.messages.create(model=MODEL, max_tokens=20, tools=[WEATHER], tool_choice={"type": "none"},
                                    messages=[*ask["messages"], {"role": "assistant", "content": called.content},
                                              {"role": "user", "content": [{"type": "tool_result",
                                                                            "tool_use_id": uses[0].id,
                                                                            "content": "Sunny and 24 C"}]}], **GREEDY)
    assert answer.content[0].type == "text" and answer.content[0].text
    with client.messages.stream(**ask) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds and [b.name for b in final.content if b.type == "tool_use"] == ["get_weather"]


def test_a_session_feeds_only_the_new_turn(client):
    history = [{"role": "user", "content": "Name a fruit."}]
    first = client.messages.create(model=MODEL, max_tokens=8, messages=history, metadata={"user_id": "anth-s1"},
                                   **GREEDY)
    history += [{"role": "assistant", "content": first.content[0].text}, {"role": "user", "content": "Another."}]
    second = client.messages.create(model=MODEL, max_tokens=8, messages=history, metadata={"user_id": "anth-s1"},
                                    **GREEDY)
    assert second.usage.cache_read_input_tokens > first.usage.input_tokens  # the whole first turn was read back
    assert second.usage.input_tokens < 20


@pytest.mark.parametrize("body, where", [
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({"output_config": {"effort": "high"}}, "effort"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]},
     "image"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
    ({"tools": [{"name": "a b", "input_schema": {"type": "object"}}]}, "tools"),
    ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"), ({"stream": "yes"}, "stream"),
    ({"max_tokens": "5"}, "max_tokens"), ({"temperature": 1.5}, "temperature"), ({"model": "claude-9"}, "claude-9"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role")])
def test_requests_it_cannot_serve_are_anthropic_shaped_4xx(server, body, where):
    base = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    r = httpx.post(server + "/v1/messages", json={**base, **body}, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()
    assert err["type"] == "error" and where in err["error"]["message"], err


def test_output_config_format_is_json_that_parses(client):
    import json

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    out = client.messages.create(model=MODEL, max_tokens=40, messages=[{"role": "user", "content": "Name a city."}],
                                 output_config={"format": {"type": "json_schema", "schema": schema}}, **GREEDY)
    assert set(json.loads(out.content[0].text)) == {"city"}
