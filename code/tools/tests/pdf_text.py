"""The text of a PDF that fpdf2 wrote, line by line, read from the file itself (no PDF library:
the test requirements have none, and fpdf2 writes a small, regular subset of PDF).

fpdf2 writes each line as ``BT x y Td /Fn size Tf (codes) Tj /Fm size Tf (codes) Tj ... ET``
(the font may also be set in a text object of its own before); with an embedded TrueType font
the codes are 2-byte glyph ids, which the font's ToUnicode CMap maps back to characters. Streams may be zlib-compressed (/FlateDecode)."""
import re
import zlib

OBJECT = re.compile(rb"(\d+) 0 obj\s*(.*?)endobj", re.S)
STREAM = re.compile(rb"^(.*?)stream\r?\n(.*)\r?\nendstream", re.S)
TEXT_OBJECT = re.compile(rb"BT\b(.*?)\bET\b", re.S)
TOKEN = re.compile(rb"/(F\d+) [\d.]+ Tf|([-\d.]+) ([-\d.]+) Td|\(((?:\\.|[^\\)])*)\) Tj", re.S)
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"(": b"(", b")": b")", b"\\": b"\\"}


def _objects(data):
    """{object number: (dictionary bytes, stream bytes or None)}, streams inflated."""
    objects = {}
    for number, body in OBJECT.findall(data):
        m = STREAM.match(body)
        if m:
            head, stream = m.group(1), m.group(2)
            objects[int(number)] = (head, zlib.decompress(stream) if b"/FlateDecode" in head else stream)
        else:
            objects[int(number)] = (body, None)
    return objects


def _unescape(literal):
    """The bytes of a PDF literal string's inside."""
    out, i = bytearray(), 0
    while i < len(literal):
        c = literal[i:i + 1]
        if c != b"\\":
            out += c
            i += 1
            continue
        nxt = literal[i + 1:i + 2]
        octal = re.match(rb"[0-7]{1,3}", literal[i + 1:i + 4])
        if octal:
            out.append(int(octal.group(0), 8) & 0xFF)
            i += 1 + len(octal.group(0))
        else:
            out += ESCAPES.get(nxt, nxt)
            i += 2
    return bytes(out)


def _cmap(text):
    """{glyph id: characters} of a ToUnicode CMap (bfchar and bfrange entries)."""
    mapping = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", text, re.S):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            mapping[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", text, re.S):
        for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            start = int(dst, 16)
            for k, code in enumerate(range(int(lo, 16), int(hi, 16) + 1)):
                mapping[code] = chr(start + k)
    return mapping


def pdf_lines(path):
    """Every page's text as lines (top to bottom): the text objects of one baseline joined by ' '
    in the order of x (the runs of one object: as written). A word that the PDF breaks over two
    lines is not whole in any line."""
    with open(path, "rb") as f:
        objects = _objects(f.read())
    fonts = {}  # object number of a font -> its glyph map
    for number, (head, _) in objects.items():
        m = re.search(rb"/ToUnicode (\d+) 0 R", head)
        if b"/Type /Font" in head and m:
            fonts[number] = _cmap(objects[int(m.group(1))][1])
    lines = []
    for head, _ in objects.values():
        if not re.search(rb"/Type /Page\b", head):
            continue
        resources = head
        m = re.search(rb"/Resources (\d+) 0 R", head)
        if m:
            resources = objects[int(m.group(1))][0]
        names = dict(re.findall(rb"/(F\d+) (\d+) 0 R", resources))
        contents = b"".join(objects[int(n)][1] for n in re.findall(rb"/Contents (\d+) 0 R", head))
        runs, font = [], {}
        for block in TEXT_OBJECT.findall(contents):
            x = y = None
            for name, tx, ty, literal in TOKEN.findall(block):
                if name:
                    font = fonts.get(int(names.get(name, b"0")), {})
                elif tx:
                    x, y = float(tx), float(ty)
                elif y is not None:
                    codes = _unescape(literal)
                    text = "".join(font.get(int.from_bytes(codes[i:i + 2], "big"), "?")
                                   for i in range(0, len(codes) - 1, 2))
                    runs.append((-round(y, 1), x, len(runs), text))
        baselines = {}
        for y, x, _, text in sorted(runs):
            baselines.setdefault(y, []).append(text)
        lines += [" ".join(t for t in texts if t.strip()) for _, texts in sorted(baselines.items())]
    return lines
