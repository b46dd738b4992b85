"""Send a DICOM file with a lung window through the public API (the InfiMed DICOM extension).

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=... python examples/chat_dicom.py [FILE.dcm]
"""

import sys

import openai
import pydicom.data

from core.dicom import dicom_part

path = sys.argv[1] if len(sys.argv) > 1 else pydicom.data.get_testdata_file("CT_small.dcm")
client = openai.OpenAI()
model = client.models.list().data[0].id
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": [dicom_part(path, window="lung"), {"type": "text", "text": "Describe the lungs."}]}],
    max_tokens=64,
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
