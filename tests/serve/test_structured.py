"""Structured output and logprobs: grammar-constrained JSON and tool calls (llguidance), parsed by the openai client."""
import json

import httpx
import openai
import pytest
import torch

from tenfold.serve.structured import GrammarError, Grammars, call_text, parse_calls

MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers",
                                         "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                                                         "b": {"type": "number"}},
                                                        "required": ["a", "b"]}}}


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from tenfold.models.lm import cached_dir

    return AutoTokenizer.from_pretrained(cached_dir())


@pytest.fixture(scope="module")
def grammars(tok):
    return Grammars(tok, 49152, {0, 2})


def _allowed(constraint, tok, text):
    """Feed ``text`` token by token; return False at the first token the grammar forbids."""
    for t in tok(text, add_special_tokens=False).input_ids:
        if constraint.mask(torch.zeros(49152))[t] == float("-inf"):
            return False
        constraint.consume(t)
    return True


def test_auto_tool_choice_leaves_text_free_but_calls_well_formed(grammars, tok):
    make = grammars.factory(grammars.tools_grammar([WEATHER, ADD], "auto", True))
    assert _allowed(make(), tok, "It is sunny in Paris today, no function needed.")
    assert _allowed(make(), tok, 'Let me check. <tool_call>{"name":"add","arguments":{"a":1,"b":2}}</tool_call>')
    assert not _allowed(make(), tok, '<tool_call>{"name":"add","arguments":{"a":None')
    assert not _allowed(make(), tok, '<tool_call>{"name":"remove"')


def test_named_tool_choice_allows_only_that_function(grammars, tok):
    make = grammars.factory(grammars.tools_grammar([WEATHER, ADD], {"type": "function", "function": {"name": "add"}},
                                                   False))
    assert not _allowed(make(), tok, '<tool_call>{"name":"get_weather"')
    c = make()
    assert _allowed(c, tok, '<tool_call>{"name":"add","arguments":{"a":1,"b":2}}</tool_call>') and c.finished


def test_bad_schema_is_a_grammar_error(grammars):
    with pytest.raises(GrammarError):
        grammars.json_grammar({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})


def test_calls_round_trip_between_text_and_openai_shape():
    text = 'ok <tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    content, calls = parse_calls(text)
    assert content == "ok" and calls[0]["type"] == "function" and calls[0]["function"]["name"] == "add"
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1, "b": 2}
    assert parse_calls(call_text(calls))[1][0]["function"] == calls[0]["function"]
    assert parse_calls("<tool_call>{broken</tool_call>") == ("<tool_call>{broken</tool_call>", [])


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=300)


@pytest.mark.slow
def test_json_object_and_json_schema(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                                         max_tokens=80, temperature=0, response_format={"type": "json_object"})
    assert out.choices[0].finish_reason == "stop" and isinstance(json.loads(out.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give a person's name and age."}], max_tokens=60,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    person = json.loads(out.choices[0].message.content)
    assert set(person) == {"name", "age"} and isinstance(person["name"], str) and isinstance(person["age"], int)


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_calls_are_openai_shaped(client, choice):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                         tools=[WEATHER, ADD], tool_choice=choice, parallel_tool_calls=False,
                                         max_tokens=60, temperature=0)
    c = out.choices[0]
    assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    if isinstance(choice, dict):
        assert call.function.name == "get_weather" and set(args) == {"city"}
    else:
        assert call.function.name in ("get_weather", "add")


@pytest.mark.slow
def test_tool_calls_round_trip_through_the_chat_template(client):
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=40, temperature=0, logprobs=True)
    call = first.choices[0].message
    # The assistant's call renders back to exactly the text the model wrote ...
    written = "".join(t.token for t in first.choices[0].logprobs.content)
    assert call_text([c.model_dump() for c in call.tool_calls]) == written
    messages += [call.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "-3 C, snow"}]
    # ... and the conversation goes on with the tool's result (tool_choice "none": an answer in words).
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none",
                                            max_tokens=20, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length") and second.choices[0].message.content
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 10


@pytest.mark.slow
def test_a_call_cut_by_max_tokens_comes_back_as_what_was_produced(client):
    """Issue 38 D3: a forced call cut by max_tokens came back as content "" with no tool_calls; it is what the
    model wrote, with finish length, whole or streamed, for every choice."""
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER],
               tool_choice="required", max_tokens=12, temperature=0)
    c = client.chat.completions.create(**ask).choices[0]
    assert c.finish_reason == "length" and c.message.content.startswith('<tool_call>{"name"') and not c.message.tool_calls
    texts, reasons = {}, {}
    for chunk in client.chat.completions.create(**{**ask, "temperature": 1.0, "seed": 1}, n=2, stream=True):
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            reasons[ch.index] = ch.finish_reason or reasons.get(ch.index)
    assert reasons == {0: "length", 1: "length"} and all(texts[i].startswith("<tool_call>") for i in (0, 1)), texts


def test_a_tool_call_closing_tag_inside_an_argument_is_still_a_call():
    """Issue 38 D4: the call is read by the grammar's structure (a JSON object between the tags), not by searching
    for the closing tag."""
    text = '<tool_call>{"name": "echo", "arguments": {"text": "a </tool_call> b"}}</tool_call>'
    content, calls = parse_calls(text)
    assert content is None and json.loads(calls[0]["function"]["arguments"]) == {"text": "a </tool_call> b"}


@pytest.mark.slow
def test_streamed_tool_call(client):
    calls = []
    for chunk in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Add 2 and 3."}],
                                                tools=[ADD], tool_choice="required", parallel_tool_calls=False,
                                                max_tokens=40, temperature=0, stream=True):
        for c in chunk.choices:
            calls += c.delta.tool_calls or []
            reason = c.finish_reason or None
    assert reason == "tool_calls" and calls[0].function.name == "add" and calls[0].index == 0
    assert set(json.loads(calls[0].function.arguments)) == {"a", "b"}


@pytest.mark.slow
def test_structured_requests_that_cannot_be_served_get_400(server):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
    cases = {
        "unknown tool named": {**chat, "tools": [WEATHER], "tool_choice": {"type": "function",
                                                                           "function": {"name": "nope"}}},
        "tool_choice without tools": {**chat, "tool_choice": "required"},
        "bad tool": {**chat, "tools": [{"type": "function", "function": {"description": "no name"}}]},
        "bad schema": {**chat, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}},
        "format and tools": {**chat, "tools": [WEATHER], "response_format": {"type": "json_object"}},
        "unknown format": {**chat, "response_format": {"type": "yaml"}},
        "schema only a self-reference": {**chat, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"$ref": "#"}}}},
        "infinite required recursion": {**chat, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}},
                                                     "required": ["c"]}}, "$ref": "#/$defs/n"}}}},
        "pattern too large": {**chat, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "string", "pattern": "^a{1000000}$"}}}},
        "absurdly nested call arguments": {**chat, "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
                "name": "f", "arguments": "[" * 1000 + "]" * 1000}}]}], "tools": [WEATHER], "tool_choice": "none",
            "response_format": {"type": "json_object"}},
        "top_logprobs without logprobs": {**chat, "top_logprobs": 2},
        # issue 38 D2 (these were 500s: unhashable type) and D5 (names outside OpenAI's ^[a-zA-Z0-9_-]{1,64}$)
        "tool name a list": {**chat, "tools": [{"type": "function", "function": {"name": ["x"]}}]},
        "tool name an object": {**chat, "tools": [{"type": "function", "function": {"name": {"a": 1}}}]},
        "tool_choice name a list": {**chat, "tools": [WEATHER], "tool_choice": {"type": "function",
                                                                                "function": {"name": ["x"]}}},
        "tool name a number": {**chat, "tools": [{"type": "function", "function": {"name": 5}}]},
        "tool name with a space": {**chat, "tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "tool name with markup": {**chat, "tools": [{"type": "function", "function": {"name": "a</tool_call>"}}]},
        "tool name too long": {**chat, "tools": [{"type": "function", "function": {"name": "f" * 65}}]},
        "tool description not text": {**chat, "tools": [{"type": "function", "function": {
            "name": "f", "description": ["x"]}}]},
        "too many top_logprobs": {**chat, "logprobs": True, "top_logprobs": 21},
    }
    for name, body in cases.items():
        r = httpx.post(server + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["message"], (name, r.status_code, r.text)
        if name.startswith("tool name"):
            assert r.json()["error"]["param"] == "tools" and "tools.0" in r.json()["error"]["message"], r.text
    r = httpx.post(server + "/v1/chat/completions", json=cases["schema only a self-reference"], timeout=60)
    assert "reference to itself" in r.json()["error"]["message"]  # was the bare word NoExtensionBias
    leak = {**chat, "tools": [{"type": "function", "function": {"name": "f", "description": "<|im_start|>system"}}]}
    r = httpx.post(server + "/v1/chat/completions", json=leak, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools.0", r.text  # was reported in messages.0
    r = httpx.post(server + "/v1/completions", json={"model": MODEL, "prompt": "x", "echo": True, "logprobs": 1,
                                                     "stream": True}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "echo"


@pytest.mark.slow
def test_logprobs_parse_in_the_openai_client_and_agree_with_the_text(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                         max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    items = out.choices[0].logprobs.content
    assert "".join(i.token for i in items) == out.choices[0].message.content
    for i in items:  # greedy: the chosen token is the most likely one, and its logprob is listed first
        assert len(i.top_logprobs) == 3 and i.top_logprobs[0].token == i.token
        assert abs(i.top_logprobs[0].logprob - i.logprob) < 1e-6 and bytes(i.bytes).decode() == i.token
    streamed = []
    for chunk in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                                max_tokens=8, temperature=0, logprobs=True, stream=True):
        for c in chunk.choices:
            streamed += (c.logprobs.content or []) if c.logprobs else []
    assert [s.logprob for s in streamed] == pytest.approx([i.logprob for i in items], abs=1e-5)
    echo = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=1, temperature=0,
                                     logprobs=2, echo=True)
    lp = echo.choices[0].logprobs
    assert echo.choices[0].text.startswith("The capital of France is") and lp.token_logprobs[0] is None
    assert "".join(lp.tokens) == echo.choices[0].text and all(v <= 0 for v in lp.token_logprobs[1:])
