// A git patch rendered for reading: one block per file, +/- lines colored, line numbers.

import { h } from './dom.js';

/** Parses `git diff` output into [{path, oldPath, status, binary, adds, dels, hunks:[{header, lines:[{kind, text, old, new}]}]}]. */
export function parsePatch(text) {
  const files = [];
  let file = null;
  let hunk = null;
  let oldLn = 0;
  let newLn = 0;
  let oldLeft = 0;
  let newLeft = 0;
  const unquote = (p) => p.replace(/^"(.*)"$/, '$1');
  for (const line of text.split('\n')) {
    if (line.startsWith('diff --git ')) {
      const m = line.match(/^diff --git "?a\/(.+?)"? "?b\/(.+?)"?$/);
      file = { path: m ? m[2] : line.slice(11), oldPath: m ? m[1] : null, status: 'modified', binary: false, adds: 0, dels: 0, hunks: [] };
      files.push(file);
      hunk = null;
      continue;
    }
    if (!file) continue;
    // Inside a hunk its header's counts say which lines are content.
    if (hunk && (oldLeft > 0 || newLeft > 0)) {
      const kind = line[0];
      if (kind === '+') {
        hunk.lines.push({ kind: 'add', text: line.slice(1), new: newLn++ });
        file.adds++;
        newLeft--;
      } else if (kind === '-') {
        hunk.lines.push({ kind: 'del', text: line.slice(1), old: oldLn++ });
        file.dels++;
        oldLeft--;
      } else if (kind === '\\') {
        hunk.lines.push({ kind: 'note', text: line });
      } else {
        hunk.lines.push({ kind: 'ctx', text: line.slice(1), old: oldLn++, new: newLn++ });
        oldLeft--;
        newLeft--;
      }
      continue;
    }
    if (hunk && line.startsWith('\\')) {
      hunk.lines.push({ kind: 'note', text: line });
      continue;
    }
    const m = line.match(/^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/);
    if (m) {
      oldLn = Number(m[1]);
      newLn = Number(m[3]);
      oldLeft = m[2] === undefined ? 1 : Number(m[2]);
      newLeft = m[4] === undefined ? 1 : Number(m[4]);
      hunk = { header: line, lines: [] };
      file.hunks.push(hunk);
      continue;
    }
    hunk = null;
    if (line.startsWith('new file mode')) file.status = 'added';
    else if (line.startsWith('deleted file mode')) file.status = 'deleted';
    else if (line.startsWith('rename from ')) file.oldPath = unquote(line.slice(12));
    else if (line.startsWith('rename to ')) {
      file.status = 'renamed';
      file.path = unquote(line.slice(10));
    } else if (line.startsWith('Binary files') || line.startsWith('GIT binary patch')) file.binary = true;
    else if (line.startsWith('+++ ') && line !== '+++ /dev/null') file.path = unquote(line.slice(4)).replace(/^b\//, '');
  }
  return files;
}

export function renderPatch(text) {
  const files = parsePatch(text);
  if (!files.length) return h('p.note', 'No changes.');
  const adds = files.reduce((n, f) => n + f.adds, 0);
  const dels = files.reduce((n, f) => n + f.dels, 0);
  return h(
    'div.diff',
    h('p.diff-summary', `${files.length} file${files.length === 1 ? '' : 's'} changed, `, h('span.add-n', `+${adds}`), ' ', h('span.del-n', `−${dels}`)),
    files.map((f) =>
      h(
        'details.diff-file',
        { open: true },
        h(
          'summary',
          h('span.fpath', f.status === 'renamed' && f.oldPath ? `${f.oldPath} → ${f.path}` : f.path),
          f.status !== 'modified' ? h('span.tag', { class: `t-${f.status}` }, f.status) : null,
          h('span.counts', h('span.add-n', `+${f.adds}`), ' ', h('span.del-n', `−${f.dels}`)),
        ),
        f.binary
          ? h('p.note', 'Binary file.')
          : f.hunks.length === 0
            ? h('p.note', 'No content change (mode or empty file).')
            : h(
                'div.diff-scroll',
                h(
                  'table.diff-table',
                  h(
                    'tbody',
                    f.hunks.map((hk) => [
                      h('tr.hunk', h('td.ln', '…'), h('td.ln', '…'), h('td.code', hk.header)),
                      hk.lines.map((l) =>
                        h('tr', { class: l.kind }, h('td.ln', l.old ?? ''), h('td.ln', l.new ?? ''), h('td.code', { 'data-sign': { add: '+', del: '-', ctx: ' ', note: '' }[l.kind] }, l.text)),
                      ),
                    ]),
                  ),
                ),
              ),
      ),
    ),
  );
}
