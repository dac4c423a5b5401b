"""Making inputs ready for Nova, used by the plan (counting units), the embed and jobs stages
(payloads) and search: text decoding and chunking, images checked and converted, PDF pages
rendered with PyMuPDF and encoded, audio and video probed. Not a stage of its own.
"""
