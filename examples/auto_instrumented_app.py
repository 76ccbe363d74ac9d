"""An application with no llmmeter code at all, measured by ``opentelemetry-instrument``.

    pip install "llmmeter[instrumentation,openai]"
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 opentelemetry-instrument python examples/auto_instrumented_app.py

llmmeter's ``opentelemetry_instrumentor`` entry point instruments every ``openai`` client; the
records land in the local store (``llmmeter report``) and in whatever OTel exporters
``opentelemetry-instrument`` configured.
"""

from __future__ import annotations

import openai


def main() -> None:
    client = openai.OpenAI(api_key="not-needed-for-a-local-server")
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    print(reply.choices[0].message.content)
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Count to five"}], stream=True
    ):
        print(chunk.choices[0].delta.content or "", end="")
    print()


if __name__ == "__main__":
    main()
