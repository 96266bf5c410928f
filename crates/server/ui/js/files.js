// The file browser: directories by breadcrumb, files viewed as text (or offered as a download).

import { api, enc } from './api.js';
import { clear, fmtBytes, fmtTime, h, svg } from './dom.js';

const VIEW_LIMIT = 1 << 20;

function icon(kind) {
  const paths = {
    dir: 'M1.5 3.5h4l1.5 1.5h7.5v8.5h-13z',
    file: 'M3 1.5h6l4 4v9H3z M9 1.5v4h4',
    symlink: 'M3 1.5h6l4 4v9H3z M6 11l4-4M7 7h3v3',
    other: 'M8 2a6 6 0 1 0 0.01 0z',
  };
  return svg('svg', { viewBox: '0 0 16 16', class: `icon i-${kind}`, 'aria-hidden': 'true' }, svg('path', { d: paths[kind] || paths.other }));
}

function join(dir, name) {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

export function fileBrowser(id, start) {
  let path = start || '/workspace';
  const crumbs = h('nav.crumbs', { 'aria-label': 'Path' });
  const list = h('ul.files', { role: 'list' });
  const viewer = h('div.viewer', { hidden: true });
  const archive = h('a.button.small.ghost', { download: '' }, 'Download .tar');
  const refreshBtn = h('button.small.ghost', { type: 'button', onclick: () => load() }, 'Refresh');
  const el = h('section.card.files-card', h('div.card-head', h('h2', 'Files'), h('div.tools', refreshBtn, archive)), crumbs, list, viewer);

  function fileUrl(p) {
    return `/api/sandboxes/${enc(id)}/files?path=${enc(p)}`;
  }

  async function load(to = path) {
    let entries;
    try {
      entries = await api(`/api/sandboxes/${enc(id)}/dir?path=${enc(to)}`);
    } catch (e) {
      clear(list, h('li.note.error', e.message));
      return;
    }
    path = to;
    viewer.hidden = true;
    archive.href = `/api/sandboxes/${enc(id)}/archive?path=${enc(path)}`;
    archive.setAttribute('download', `${path.split('/').filter(Boolean).pop() || 'root'}.tar`);
    const parts = path.split('/').filter(Boolean);
    clear(
      crumbs,
      h('button.crumb', { type: 'button', onclick: () => load('/') }, '/'),
      parts.map((p, i) => [
        i ? h('span.sep', '/') : null,
        h('button.crumb', { type: 'button', onclick: () => load(`/${parts.slice(0, i + 1).join('/')}`) }, p),
      ]),
    );
    entries.sort((a, b) => (b.kind === 'dir') - (a.kind === 'dir') || a.name.localeCompare(b.name));
    const up = parts.length
      ? h('li', h('button.entry', { type: 'button', onclick: () => load(`/${parts.slice(0, -1).join('/')}`) }, icon('dir'), h('span.fname', '..')))
      : null;
    clear(
      list,
      up,
      entries.map((e) =>
        h(
          'li',
          h(
            'button.entry',
            {
              type: 'button',
              title: `${e.name} · ${(e.mode ?? 0).toString(8).padStart(4, '0')} · ${fmtTime(e.modified)}`,
              onclick: () => (e.kind === 'dir' ? load(join(path, e.name)) : view(join(path, e.name), e)),
            },
            icon(e.kind),
            h('span.fname', e.name + (e.kind === 'dir' ? '/' : '')),
            h('span.fsize', e.kind === 'file' ? fmtBytes(e.size) : e.kind === 'dir' ? '' : e.kind),
          ),
        ),
      ),
      entries.length ? null : h('li.note', 'This directory is empty.'),
    );
  }

  async function view(p, entry) {
    const name = p.split('/').pop();
    const download = h('a.button.small', { href: fileUrl(p), download: name }, 'Download');
    const close = h('button.small.ghost', { type: 'button', onclick: () => (viewer.hidden = true) }, 'Close');
    const body = h('pre.file-text', 'Loading…');
    clear(viewer, h('div.viewer-head', h('strong.fname', p), h('span.muted', fmtBytes(entry.size)), h('div.tools', download, close)), body);
    viewer.hidden = false;
    if (entry.size > VIEW_LIMIT) {
      clear(body, h('span.muted', `Too large to show here (${fmtBytes(entry.size)}): download it.`));
      return;
    }
    try {
      const bytes = await api(fileUrl(p), { as: 'bytes' });
      let text;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        clear(body, h('span.muted', `A binary file (${fmtBytes(bytes.length)}): download it.`));
        return;
      }
      body.textContent = text || '(empty file)';
    } catch (e) {
      clear(body, h('span.error', e.message));
    }
    viewer.scrollIntoView({ block: 'nearest' });
  }

  return { el, load };
}
