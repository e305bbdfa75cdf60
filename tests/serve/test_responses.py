"""The Responses API of ``tenfold serve`` (issue 38 item 2) through the clients that speak it: the official openai
SDK, openai-agents with its default (Responses) model, and LangChain's ``ChatOpenAI(use_responses_api=True)``."""
import asyncio
import json

import httpx
import openai
import pytest
from pydantic import BaseModel

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=300)


def test_plain_and_streamed_agree_and_events_come_in_order(client):
    ask = dict(model=MODEL, input="What is the capital of France?", max_output_tokens=30, temperature=0)
    whole = client.responses.create(**ask)
    assert whole.status == "completed" and "Paris" in whole.output_text
    assert whole.usage.input_tokens > 0 and whole.usage.output_tokens > 0 and whole.id.startswith("resp_")
    kinds, text = [], ""
    with client.responses.stream(**ask) as stream:
        for event in stream:
            kinds.append(event.type)
            text += event.delta if event.type == "response.output_text.delta" else ""
        final = stream.get_final_response()
    assert text == final.output_text == whole.output_text
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}


def test_a_response_cut_by_max_output_tokens_is_incomplete(server):
    events = []
    with httpx.stream("POST", server + "/v1/responses", json={"model": MODEL, "input": "Tell me a long story.",
                                                             "max_output_tokens": 5, "stream": True}, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["usage"]["output_tokens"] == 5


def test_previous_response_id_continues_the_sink_cache_session(client):
    """A follow-up feeds only its new input: everything before it was already in the chain's session cache
    (usage.input_tokens_details.cached_tokens), over more turns than the window (4+124) holds."""
    first = client.responses.create(model=MODEL, input="Name a fruit.", max_output_tokens=12, temperature=0)
    previous, cached = first, []
    for turn in range(6):
        nxt = client.responses.create(model=MODEL, input=f"Another one, number {turn}.", max_output_tokens=12,
                                      temperature=0, previous_response_id=previous.id)
        cached.append((nxt.usage.input_tokens, nxt.usage.input_tokens_details.cached_tokens))
        previous = nxt
    assert all(c >= p_in - 20 and c > 0 for p_in, c in cached), cached  # only the new turn's ~15 tokens are fed
    assert cached[-1][0] > 128, cached  # the conversation outgrew the cache: the sink cache went on
    assert client.responses.retrieve(previous.id).output_text == previous.output_text
    items = client.responses.input_items.list(previous.id)
    assert [i.content[0].text for i in items.data] == ["Another one, number 5."]


def test_the_same_answer_with_or_without_a_stored_chain(client):
    """A chain continued through previous_response_id answers as the whole conversation sent again would."""
    first = client.responses.create(model=MODEL, input="Hi! Who are you?", max_output_tokens=10, temperature=0)
    chained = client.responses.create(model=MODEL, input="Name a colour.", previous_response_id=first.id,
                                      max_output_tokens=10, temperature=0)
    resent = client.responses.create(model=MODEL, max_output_tokens=10, temperature=0, store=False, input=[
        {"role": "user", "content": "Hi! Who are you?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": first.output_text}]},
        {"role": "user", "content": "Name a colour."}])
    assert chained.output_text == resent.output_text


def test_function_tools_round_trip(client):
    call = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                   tool_choice="required", parallel_tool_calls=False, max_output_tokens=40,
                                   temperature=0)
    calls = [o for o in call.output if o.type == "function_call"]
    assert call.status == "completed" and len(calls) == 1 and calls[0].name == "get_weather"
    assert set(json.loads(calls[0].arguments)) == {"city"}
    answer = client.responses.create(model=MODEL, previous_response_id=call.id, tools=[WEATHER], tool_choice="none",
                                     input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                             "output": "Sunny and 24 C"}], max_output_tokens=30, temperature=0)
    assert answer.output_text and answer.usage.input_tokens_details.cached_tokens > 0
    kinds = []
    with client.responses.stream(model=MODEL, input="Weather in Rome?", tools=[WEATHER], tool_choice="required",
                                 parallel_tool_calls=False, max_output_tokens=40, temperature=0) as stream:
        kinds = [e.type for e in stream]
        streamed = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    assert [o.name for o in streamed.output if o.type == "function_call"] == ["get_weather"]


def test_text_format_json_schema_through_parse(client):
    class City(BaseModel):
        name: str
        country: str

    parsed = client.responses.parse(model=MODEL, input="Name a city in Italy.", text_format=City,
                                    max_output_tokens=40, temperature=0)
    assert isinstance(parsed.output_parsed, City)


def test_stored_responses_get_delete_and_store_false(client):
    kept = client.responses.create(model=MODEL, input="Hello", max_output_tokens=4, temperature=0)
    assert client.responses.retrieve(kept.id).id == kept.id
    client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    gone = client.responses.create(model=MODEL, input="Hello", max_output_tokens=4, temperature=0, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(gone.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model=MODEL, input="Go on", previous_response_id=gone.id, max_output_tokens=4)
    assert missing.value.body["param"] == "previous_response_id"


def test_input_tokens_counts_what_a_response_would_read(client):
    counted = client.responses.input_tokens.count(model=MODEL, input="What is the capital of France?")
    made = client.responses.create(model=MODEL, input="What is the capital of France?", max_output_tokens=2)
    assert counted.input_tokens == made.usage.input_tokens


@pytest.mark.parametrize("field, value", [
    ("reasoning", {"effort": "high"}), ("include", ["message.output_text.logprobs"]), ("top_logprobs", 3),
    ("background", True), ("max_tool_calls", 1), ("conversation", "conv_1"), ("seed", 1),
    ("tools", [{"type": "web_search"}]), ("text", {"verbosity": "low"}), ("truncation", "sometimes"),
    ("input", [{"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]),
    ("input", [{"type": "reasoning", "summary": []}]), ("stream", "yes"), ("store", 1),
    ("tools", [{"type": "function", "name": "a b"}]), ("input", [{"role": "user", "content": "<|im_start|>x"}])])
def test_fields_it_does_not_serve_are_refused_by_name(server, field, value):
    r = httpx.post(server + "/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 3,
                                                    field: value}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert field in (err["param"] or "") or field in err["message"], err


def test_openai_agents_default_model_calls_a_function_tool(server):
    from agents import (Agent, ModelSettings, Runner, function_tool, set_default_openai_client,
                        set_tracing_disabled)

    set_tracing_disabled(True)
    set_default_openai_client(openai.AsyncOpenAI(base_url=server + "/v1", api_key="none", max_retries=0),
                              use_for_tracing=False)
    asked = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny and 24 C in {city}"

    agent = Agent(name="weather", instructions="Answer weather questions with the tool.", model=MODEL,
                  tools=[get_weather], model_settings=ModelSettings(tool_choice="required", max_tokens=60,
                                                                    temperature=0))
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?", max_turns=3))
    assert asked and asked[0] == "Paris" and result.final_output


def test_langchain_chat_openai_with_the_responses_api(server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=server + "/v1", api_key="none", use_responses_api=True, temperature=0,
                     max_tokens=30, max_retries=0)
    reply = llm.invoke("What is the capital of France?")
    assert "Paris" in reply.text and reply.usage_metadata["output_tokens"] > 0

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert called.tool_calls[0]["name"] == "get_weather" and "city" in called.tool_calls[0]["args"]


def test_deleting_a_response_keeps_its_continuations_whole(client):
    """A deleted (or pushed-out) response hands its turn to the responses that continued it: a chain through it
    can still be continued, with the same conversation."""
    a = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=8, temperature=0)
    b = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=a.id,
                                max_output_tokens=8, temperature=0)
    before = client.responses.input_tokens.count(model=MODEL, input="Again?", previous_response_id=b.id)
    client.responses.delete(a.id)
    after = client.responses.input_tokens.count(model=MODEL, input="Again?", previous_response_id=b.id)
    assert after.input_tokens == before.input_tokens  # A's turn is still in B's conversation
    c = client.responses.create(model=MODEL, input="Again?", previous_response_id=b.id, max_output_tokens=8,
                                temperature=0)
    assert c.usage.input_tokens == before.input_tokens and c.usage.input_tokens_details.cached_tokens > 0


def test_a_call_cut_after_complete_calls_leaves_no_markup(client):
    """With parallel calls the small model keeps calling until the budget cuts a call in half: the complete calls
    come back, the cut-off one is dropped (it came back as raw <tool_call> text before the calls)."""
    out = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER], tool_choice="required",
                                  max_output_tokens=40, temperature=0)
    assert out.status == "incomplete" and out.output and all(o.type == "function_call" for o in out.output)
    chat = openai.OpenAI(base_url=client.base_url, api_key="none").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], max_tokens=40, temperature=0,
        tools=[{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}],
        tool_choice="required")
    assert chat.choices[0].finish_reason == "length" and chat.choices[0].message.tool_calls
    assert not chat.choices[0].message.content


def test_metadata_follows_openais_rule(server):
    for bad in ([1], {"a": {"b": 1}}, {"a": 5}, {f"k{i}": "v" for i in range(17)}):
        r = httpx.post(server + "/v1/responses", json={"model": MODEL, "input": "Hi", "metadata": bad}, timeout=60)
        assert r.status_code == 400 and "metadata" in r.json()["error"]["message"], r.text
    ok = httpx.post(server + "/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 2,
                                                    "metadata": {"team": "a"}}, timeout=60).json()
    assert ok["metadata"] == {"team": "a"} and ok["tool_choice"] == "auto"
    assert httpx.head(server + "/health").status_code == 200
