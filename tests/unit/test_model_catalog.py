"""The catalog's pure parts: provider-key encryption, public model ids, and default sampling params."""

from __future__ import annotations

import pytest

from server.core.errors import ApiError
from server.llm.catalog.provider_keys import ProviderKeyCipher, hint
from server.llm.catalog.sync import public_model_ids
from server.llm.chat_request import validate_default_params


def test_a_key_decrypts_only_for_its_provider_and_secret() -> None:
    cipher = ProviderKeyCipher(b"s" * 64)
    sealed = cipher.encrypt("sk-upstream-1234", "prov_a")
    assert "sk-upstream" not in sealed and sealed != cipher.encrypt("sk-upstream-1234", "prov_a")
    assert cipher.decrypt(sealed, "prov_a") == "sk-upstream-1234"
    assert cipher.decrypt(sealed, "prov_b") is None
    assert ProviderKeyCipher(b"t" * 64).decrypt(sealed, "prov_a") is None
    assert hint("sk-upstream-1234") == "...1234"


def test_public_ids_are_the_vendor_and_the_last_segment_in_lowercase() -> None:
    ids = public_model_ids("vllm", ["Qwen/Qwen2.5-0.5B-Instruct", "meta/Llama 3", "a/dup", "b/dup"])
    assert ids == {
        "Qwen/Qwen2.5-0.5B-Instruct": "vllm/qwen2.5-0.5b-instruct",
        "meta/Llama 3": "vllm/llama-3",
        "a/dup": "vllm/a/dup",
        "b/dup": "vllm/b/dup",
    }
    assert public_model_ids("google", ["models/gemini-pro"]) == {"models/gemini-pro": "google/gemini-pro"}


def test_default_params_are_request_fields_valid_as_in_a_request() -> None:
    assert validate_default_params({"temperature": 0.2, "stop": ["END"], "max_tokens": 64}) == {
        "temperature": 0.2, "stop": ["END"], "max_tokens": 64,
    }
    for bad, param in [({"temperature": 3}, "default_params.temperature"), ({"tools": []}, "default_params.tools"),
                       ({"max_tokens": 0}, "default_params.max_tokens"), ([], "default_params")]:
        with pytest.raises(ApiError) as raised:
            validate_default_params(bad)
        assert (raised.value.status, raised.value.param) == (400, param)
