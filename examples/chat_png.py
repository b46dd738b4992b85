"""Ask the served model about a PNG through the public API with the official `openai` client.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=... python examples/chat_png.py [IMAGE]
"""

import base64
import io
import sys

import openai
from PIL import Image, ImageDraw

if len(sys.argv) > 1:
    data = open(sys.argv[1], "rb").read()
else:  # a synthetic "chest film" so the example runs anywhere
    img = Image.new("RGB", (224, 224), "black")
    d = ImageDraw.Draw(img)
    d.ellipse((30, 40, 100, 190), fill=(90, 90, 90))
    d.ellipse((124, 40, 194, 190), fill=(90, 90, 90))
    d.ellipse((60, 100, 72, 112), fill=(220, 220, 220))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()

client = openai.OpenAI()
model = client.models.list().data[0].id
url = "data:image/png;base64," + base64.b64encode(data).decode()
resp = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                           {"type": "text", "text": "Is there a nodule? Answer yes or no."}]}],
    max_tokens=32,
    temperature=0,
)
print(f"{model}: {resp.choices[0].message.content!r}")
