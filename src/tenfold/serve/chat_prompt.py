"""Chat prompts for the serving model: conversation messages -> the token ids the engine feeds.

Every chat-shaped API (Chat Completions, Responses, Anthropic Messages) first turns its request into plain
messages, ``{"role": "system" | "user" | "assistant" | "tool", "content": str}`` (earlier tool calls already written
as the text the model writes for them, :func:`tenfold.serve.structured.call_text`), and then calls
:meth:`ChatPrompts.ids`. The checks every API needs live here too: control tokens that would forge a turn, the
system prompt's length for ``--keep system``, and images for a vision-language model.
"""
from __future__ import annotations

import json

from tenfold.models.lm import chat_ids
from tenfold.serve.errors import APIError
from tenfold.serve.structured import call_text, tools_prompt


def count_images(messages) -> int:
    """Image parts in Chat Completions ``messages`` (pydantic :class:`~tenfold.serve.protocol.chat.Message`)."""
    return sum(1 for m in messages if isinstance(m.content, list) for p in m.content if p["type"] == "image_url")


class ChatPrompts:
    """Renders conversations with the tokenizer's chat template (or the vision model's prompt builder).

    ``vision``: a :class:`~tenfold.vision.vlm.VisionLanguageModel` or None; ``max_pixels``: the largest image taken.
    """

    def __init__(self, tok, vision=None, max_pixels: int = 4096 * 4096):
        self.tok, self.vision, self.max_pixels = tok, vision, max_pixels
        self.placeholder = None if vision is None else tok.convert_ids_to_tokens(vision.image_token_id)
        self.control = sorted({t for t in tok.all_special_tokens if len(t) > 2 and t != self.placeholder},
                              key=len, reverse=True)

    def from_chat(self, messages) -> tuple[list[dict], list]:
        """Chat Completions messages as plain messages (image parts become the VLM's placeholder) and the decoded
        images. Runs in a worker thread when there are images: decoding them must not block the event loop."""
        from tenfold.serve.images import BadImage, decode_data_url

        placeholder = "<image>" if self.placeholder is None else self.placeholder
        plain, images = [], []
        for i, m in enumerate(messages):
            text, urls = m.text_and_images(placeholder)
            if urls and self.vision is None:
                raise APIError(400, "this server's model does not take images (start it with `tenfold serve --vlm "
                               "DIR`)", param=f"messages.{i}.content", code="images_not_supported")
            for url in urls:
                try:
                    images.append(decode_data_url(url, self.max_pixels))
                except BadImage as exc:
                    raise APIError(400, str(exc), param=f"messages.{i}.content", code="invalid_image") from None
            if m.tool_calls:  # an earlier assistant turn's calls, as the text the model wrote for them
                text = (text + "\n" if text else "") + call_text(m.tool_calls)
            plain.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        return plain, images

    def _with_tools(self, messages: list[dict], tools: list[dict]) -> list[dict]:
        """Messages that tell the model about ``tools``: the chat template's own way when it renders them, else a
        system-prompt section (tenfold.serve.structured.tools_prompt)."""
        try:
            plain = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            native = self.tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
            if native != plain:
                return messages  # the template renders them; ids() passes them on
        except Exception:  # noqa: BLE001 - a template without tool support
            pass
        section = tools_prompt(tools)
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": messages[0]["content"] + "\n\n" + section}, *messages[1:]]
        return [{"role": "system", "content": section}, *messages]

    def ids(self, messages: list[dict], tools: list[dict] | None = None, param: str = "messages") -> tuple[list[int], list[dict]]:
        """The prompt's token ids (generation prompt appended) and the messages as rendered (tools folded in).

        Raises APIError 400 (``param``) when the template rejects the conversation. CPU work: call it off the
        event loop for long prompts.
        """
        if tools:
            messages = self._with_tools(messages, tools)
        try:
            if self.vision is not None:
                ids = self.vision.prompt_ids(messages)
            elif tools and getattr(self.tok, "chat_template", None):
                ids = list(self.tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                        tokenize=True, return_dict=True)["input_ids"])
            else:
                ids = chat_ids(self.tok, messages)[0].tolist()
        except Exception as exc:  # noqa: BLE001 - a template that rejects the conversation
            raise APIError(400, f"cannot apply the chat template: {exc}", param=param) from None
        return ids, messages

    def text(self, messages: list[dict], tools: list[dict] | None = None, param: str = "messages",
             generation_prompt: bool = True) -> str:
        """The prompt as text (generation prompt appended unless ``generation_prompt`` is False): what :meth:`ids`
        tokenizes, for a caller that tokenizes only a new suffix of it (the Responses API continuing a stored
        conversation). Not for a vision model."""
        if tools:
            messages = self._with_tools(messages, tools)
        try:
            if getattr(self.tok, "chat_template", None):
                return self.tok.apply_chat_template(messages, tools=tools if tools else None, tokenize=False,
                                                    add_generation_prompt=generation_prompt)
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + \
                ("\nassistant:" if generation_prompt else "")
        except Exception as exc:  # noqa: BLE001 - a template that rejects the conversation
            raise APIError(400, f"cannot apply the chat template: {exc}", param=param) from None

    def encode(self, text: str) -> list[int]:
        """Token ids of prompt text (control tokens in it read as such, as the chat template's are)."""
        return self.tok(text, add_special_tokens=False).input_ids

    def check_images(self, ids: list[int], images: list) -> None:
        if self.vision is not None and self.vision.count_images(ids) != len(images):
            raise APIError(400, f"the messages hold {len(images)} image(s) but {self.vision.count_images(ids)} "
                           "image placeholder(s); do not write the placeholder text yourself", param="messages")

    def check_control_tokens(self, messages: list[dict], param: str = "messages") -> None:
        """Chat content may not spell the template's control tokens (``<|im_start|>`` ...): the tokenizer would read
        them as real turn boundaries, letting a user forge system or assistant turns."""
        for i, m in enumerate(messages):
            found = next((t for t in self.control if t in m["content"]), None)
            if found is not None:
                raise APIError(400, f"message {i} contains the control token {found!r}, which would forge a turn of "
                               "the chat template; remove it", code="control_token",
                               param=param if param == "instructions" else f"{param}.{i}.content")

    def check_tools(self, tools: list[dict] | None, param: str = "tools") -> None:
        """Tool names, descriptions and schemas may not spell a control token either (they are rendered into the
        prompt)."""
        for i, tool in enumerate(tools or []):
            text = json.dumps(tool, ensure_ascii=False)
            found = next((t for t in self.control if t in text), None)
            if found is not None:
                raise APIError(400, f"tool {i} contains the control token {found!r}, which would forge a turn of the "
                               "chat template; remove it", param=f"{param}.{i}", code="control_token")

    def system_tokens(self, messages: list[dict]) -> int:
        """Tokens of the rendered chat up to the end of its leading system message(s) (0 without one)."""
        lead = 0
        while lead < len(messages) and messages[lead]["role"] == "system":
            lead += 1
        if not lead:
            return 0
        try:
            return int(chat_ids(self.tok, messages[:lead], add_generation_prompt=False).shape[1])
        except Exception:  # noqa: BLE001 - a template that wants a user turn: keep nothing rather than fail
            return 0
