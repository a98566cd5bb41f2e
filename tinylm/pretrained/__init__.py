"""Pre-trained models read into the course's own code, offline, from files in PyPI packages.

- :mod:`tinylm.pretrained.gguf`    reading a GGUF file (llama.cpp's format): metadata and tensors
- :mod:`tinylm.pretrained.minilm`  all-MiniLM-L6-v2, a BERT sentence encoder, in our Encoder
- :mod:`tinylm.pretrained.smollm2` SmolLM2-135M-Instruct, a LLaMA-architecture chat model, in our DecoderLM
"""
