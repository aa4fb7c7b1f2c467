#!/usr/bin/env python3
"""hdr2scd - man pages for uhmm's public calls, from the header comments.

The headers in include/uhmm/ are uhmm's documentation (docs/ARCHITECTURE.md,
"Man pages"): every exported call has a comment before its declaration.
This script turns each into an scdoc(5) source, section 3, which scdoc
renders to roff; a call documented together with the ones declared right
after it (one comment, several declarations) gets the page, and the others
a roff ".so" page pointing at it.  Structures named in a call's prototype
are shown with their fields and comments.

usage: hdr2scd.py OUTDIR VERSION HEADER...
Writes OUTDIR/NAME.3.scd for each page and OUTDIR/NAME.3.so for aliases,
and prints the list of names to stdout; warns of an exported declaration
(UHMM_API) without a comment (it gets no page: the test
docs.exports_and_man_pages fails).
"""
import os
import re
import sys

DECL = re.compile(r'^UHMM_API\b')
NAME = re.compile(r'\b(uhmm_[a-z0-9_]+)\s*\(')


def escape(text):
    """scdoc markup characters taken literally."""
    return (text.replace('\\', '\\\\').replace('*', '\\*')
            .replace('_', '\\_').replace('`', '\\`'))


def comment_text(lines):
    """The text of a /* */ or /** */ comment, without its frame."""
    out = []
    for i, l in enumerate(lines):
        s = l.strip()
        if i == 0:
            s = re.sub(r'^/\*\*?', '', s)
        if s.endswith('*/'):
            s = s[:-2]
        s = s.rstrip()
        if s.startswith('*'):
            s = s[1:]
            if s.startswith(' '):
                s = s[1:]
        out.append(s.rstrip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def parse(path):
    """[(comment lines or None, [declarations])] and {struct: source lines}.

    A declaration's comment is the comment right above it (blank lines and
    typedef lines between are allowed), or, for a call declared right after
    a structure (uhmm_ctx_info after struct uhmm_ctx_info), the structure's
    own comment.  Declarations that follow a documented one with nothing
    between share its comment (one page, the others alias it)."""
    src = open(path).read().split('\n')
    items, structs = [], {}
    pending = None      # the last comment, and where it ended
    pend_end = -10
    last_end = -10      # where the last declaration or structure ended
    last_kind = None
    i = 0
    while i < len(src):
        st = src[i].strip()
        if st.startswith('/*'):
            j = i
            while '*/' not in src[j]:
                j += 1
            pending, pend_end = src[i:j + 1], j
            i = j + 1
            continue
        m = re.match(r'^(?:typedef\s+)?struct\s+(uhmm_[a-z0-9_]+)\s*\{', st)
        if m:
            j = i
            while not src[j].startswith('}'):
                j += 1
            doc = pending if pending is not None and pend_end == i - 1 else None
            structs[m.group(1)] = (doc or []) + src[i:j + 1]
            pending = doc  # a call right after the structure takes its comment
            pend_end = j
            last_end, last_kind = j, 'struct'
            i = j + 1
            continue
        if DECL.match(st):
            j = i
            while ';' not in src[j] and '{' not in src[j]:
                j += 1
            decl = ' '.join(x.strip() for x in src[i:j + 1])
            decl = re.sub(r'^UHMM_API\s+', '', decl).rstrip('{ ').strip()
            if not decl.endswith(';'):
                decl += ';'
            between = src[pend_end + 1:i]
            close = all(not b.strip() or b.strip().startswith('typedef') for b in between)
            if last_kind == 'decl' and last_end == i - 1 and items:
                items[-1][1].append(decl)
            elif pending is not None and close:
                items.append((comment_text(pending), [decl]))
            else:
                items.append((None, [decl]))
            pending = None
            last_end, last_kind = j, 'decl'
            i = j + 1
            continue
        i += 1
    return items, structs


def page(name, header, comment, decls, structs, version, see):
    title = name.upper()
    out = [f'{name}(3) "uhmm {version}" "uhmm manual"', '', '# NAME', '']
    summary = ''
    body = list(comment)
    m = re.match(r'^(uhmm_[a-z0-9_, ]+?)\s+-\s+(.*)$', body[0]) if body else None
    names = [n for n in (NAME.findall(' '.join(decls)))]
    if m:
        summary = m.group(2)
        body = body[1:]
        # A summary that runs over several lines ends at a blank line or
        # at the first parameter line.
        while body and body[0].strip() and not body[0].lstrip().startswith('@'):
            summary += ' ' + body[0].strip()
            body = body[1:]
    else:
        first = ' '.join(l.strip() for l in body[:3] if l.strip())
        summary = re.split(r'(?<=\.)\s', first, maxsplit=1)[0]
    out.append(escape(', '.join(dict.fromkeys(names))) + ' - ' + escape(summary))
    out += ['', '# SYNOPSIS', '', f'*#include <uhmm/{header}>*', '', '```']
    out += decls
    out += ['```', '', 'Link with _-luhmm_ (pkg-config: _uhmm_).', '', '# DESCRIPTION', '']
    # Paragraphs: split at blank lines and at parameter lines.
    paras = []   # (lead markup, [raw lines])
    for l in body + ['']:
        t = l.strip()
        m2 = re.match(r'^@([A-Za-z0-9_, @]+):\s*(.*)$', t)
        if not t:
            paras.append(None)
        elif m2:
            paras.append(('*' + escape(m2.group(1).replace('@', '')) + '*: ', [m2.group(2)]))
        elif paras and paras[-1] is not None:
            paras[-1][1].append(t)
        else:
            paras.append(('', [t]))
    paras = [x for x in paras if x is not None]
    # RETURN VALUE: from the last paragraph (not the first) that speaks of
    # what the call returns or of its errors.
    k = len(paras)
    for idx, (lead, lines) in enumerate(paras):
        text = ' '.join(lines)
        if idx > 0 and re.search(r'\bReturns?\b|\bErrors?\b|-E[A-Z]{2,}', text):
            k = idx
    errors = []
    for idx, (lead, lines) in enumerate(paras):
        text = escape(' '.join(lines))
        if not lead and text.startswith('-'):
            text = '\\' + text  # not a list
        (out if idx < k else errors).extend([lead + text, ''])
    if errors:
        out += ['# RETURN VALUE', ''] + errors
    used = []
    for d in decls:
        for s in re.findall(r'struct\s+(uhmm_[a-z0-9_]+)', d):
            if s in structs and s not in used:
                used.append(s)
    if used:
        out += ['# STRUCTURES', '']
        for s in used:
            out += ['```'] + [l.replace('\t', '    ') for l in structs[s]] + ['```', '']
    out += ['# SEE ALSO', '', escape(', '.join(f'{x}(3)' for x in see if x != name) +
                                    (', ' if len(see) > 1 else '') + 'uhmm(7)'), '']
    return '\n'.join(out)


def main():
    outdir, version, headers = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(outdir, exist_ok=True)
    missing = []
    written = []
    for h in headers:
        items, structs = parse(h)
        base = os.path.basename(h)
        allnames = []
        for c, decls in items:
            allnames += NAME.findall(decls[0])[:1]
        for c, decls in items:
            names = [NAME.findall(d)[0] for d in decls if NAME.findall(d)]
            # uhmm__*: the out-of-line halves of the inline accessors of
            # simdev.h, exported for them only; not calls of the API.
            names = [n for n in names if not n.startswith('uhmm__')]
            if not names:
                continue
            if c is None:
                missing += names
                continue
            see = [n for n in allnames][:12]
            text = page(names[0], base, c, decls, structs, version, see)
            with open(os.path.join(outdir, names[0] + '.3.scd'), 'w') as f:
                f.write(text)
            written.append(names[0])
            for alias in names[1:]:
                with open(os.path.join(outdir, alias + '.3.so'), 'w') as f:
                    f.write(f'.so man3/{names[0]}.3\n')
                written.append(alias)
    for n in written:
        print(n)
    if missing:
        # Not fatal to the build: docs.exports_and_man_pages fails on the
        # missing pages.
        sys.stderr.write('hdr2scd: warning: no comment (so no page) for: ' +
                         ' '.join(missing) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
