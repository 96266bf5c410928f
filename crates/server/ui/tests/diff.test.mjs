// The patch parser behind the task page's diff view (no browser needed).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePatch } from '../js/diff.js';

const PATCH = `diff --git a/hi.txt b/hi.txt
new file mode 100644
index 0000000..45b983b
--- /dev/null
+++ b/hi.txt
@@ -0,0 +1 @@
+hi
diff --git a/src/a.c b/src/a.c
index 1111111..2222222 100644
--- a/src/a.c
+++ b/src/a.c
@@ -1,3 +1,3 @@ int main(void)
 x
--- y
+++ z
 w
\\ No newline at end of file
diff --git a/old.txt b/new.txt
similarity index 100%
rename from old.txt
rename to new.txt
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
index 45b983b..0000000
--- a/gone.txt
+++ /dev/null
@@ -1,2 +0,0 @@
-a
-b
diff --git a/logo.png b/logo.png
new file mode 100644
index 0000000..1111111
GIT binary patch
literal 3
KcmZQz00000

`;

test('a git patch is read file by file', () => {
  const files = parsePatch(PATCH);
  assert.deepEqual(
    files.map((f) => [f.path, f.status, f.adds, f.dels, f.binary]),
    [
      ['hi.txt', 'added', 1, 0, false],
      ['src/a.c', 'modified', 1, 1, false],
      ['new.txt', 'renamed', 0, 0, false],
      ['gone.txt', 'deleted', 0, 2, false],
      ['logo.png', 'added', 0, 0, true],
    ],
  );
  assert.equal(files[2].oldPath, 'old.txt');
});

test('lines that look like headers inside a hunk are content', () => {
  const [, c] = parsePatch(PATCH);
  assert.deepEqual(
    c.hunks[0].lines.map((l) => [l.kind, l.text, l.old ?? null, l.new ?? null]),
    [
      ['ctx', 'x', 1, 1],
      ['del', '-- y', 2, null],
      ['add', '++ z', null, 2],
      ['ctx', 'w', 3, 3],
      ['note', '\\ No newline at end of file', null, null],
    ],
  );
});

test('no patch, no files', () => {
  assert.deepEqual(parsePatch(''), []);
});
