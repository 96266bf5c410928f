// The real E2B JavaScript SDK (npm `e2b`, unmodified) against Stockade's E2B-compatible surface.
// Run by scripts/e2b-sdk-test once per driver (E2B_TEST_DRIVER, native by default):
//   node --test --test-concurrency=1 sdk.test.mjs
// The `base` template runs as E2B's `user` in /home/user on docker, as root in /root on native
// (the host's root has no `user`); tests write under that home or /tmp only.

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { after, before, test } from 'node:test'

import {
  CommandExitError,
  FileNotFoundError,
  FileType,
  FilesystemEventType,
  InvalidArgumentError,
  NotFoundError,
  Sandbox,
  SandboxError,
  SandboxNotFoundError,
} from 'e2b'

import { Daemon } from './daemon.mjs'

const driver = process.env.E2B_TEST_DRIVER || 'native'
const [USER, HOME] = driver === 'native' ? ['root', '/root'] : ['user', '/home/user']
const daemon = new Daemon(driver)
const made = []
const runId = crypto.randomBytes(4).toString('hex')
const MiB = 1024 * 1024
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function waitFor(pred, ms = 10_000, what = 'condition') {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await pred()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(50)
  }
}

async function create(opts = {}) {
  const sbx = await Sandbox.create({ timeoutMs: 300_000, ...opts, metadata: { run: runId, ...(opts.metadata || {}) } })
  made.push(sbx)
  return sbx
}

// A test whose failure also prints the tail of the daemon's log.
function it(name, fn, opts = {}) {
  test(`${name} [${driver}]`, { timeout: 120_000, ...opts }, async (t) => {
    try {
      await fn(t)
    } catch (e) {
      console.error(`\n---- stockade daemon log (tail) after "${name}" failed ----\n${daemon.logTail(60)}\n----`)
      throw e
    }
  })
}

let sbx

before(async () => {
  await daemon.start()
  daemon.applySdkEnv()
  sbx = await create({ metadata: { suite: 'shared' } })
})

after(async () => {
  for (const s of made) {
    try {
      await s.kill()
    } catch {
      // killed by its test already
    }
  }
  // Sandboxes outlive the daemon by design: leave none behind.
  try {
    const pager = Sandbox.list({ limit: 100 })
    const left = []
    while (pager.hasNext) left.push(...(await pager.nextItems()).map((s) => s.sandboxId))
    for (const id of left) await Sandbox.kill(id)
    if (left.length) console.error(`teardown: killed sandboxes the tests left running: ${left.join(' ')}`)
  } catch (e) {
    console.error(`teardown: could not list/kill leftover sandboxes: ${e}`)
  }
  const code = await daemon.stop(30_000)
  const tail = daemon.logTail()
  if (code === 0) daemon.cleanup()
  assert.equal(code, 0, `stockade serve did not exit 0 within 30 s of SIGTERM (exit ${code}); log tail:\n${tail}`)
})

it('create with envs and metadata', async () => {
  const s = await create({ envs: { FOO: 'bar' }, metadata: { k: 'v' }, timeoutMs: 120_000 })
  assert.ok(s.sandboxId)
  assert.equal(await s.isRunning(), true)
  const r = await s.commands.run('echo $FOO')
  assert.deepEqual([r.stdout, r.stderr, r.exitCode], ['bar\n', '', 0])
  const info = await s.getInfo()
  assert.equal(info.sandboxId, s.sandboxId)
  assert.deepEqual(info.metadata, { k: 'v', run: runId })
  assert.ok(info.templateId === 'base' || info.name === 'base', `${info.templateId} ${info.name}`)
  assert.equal(info.state, 'running')
  const secs = (info.endAt - info.startedAt) / 1000
  assert.ok(Math.abs(secs - 120) <= 3, `endAt - startedAt = ${secs}s`)
})

it('commands.run foreground: output, exit code, CommandExitError, callbacks, cwd, envs', async () => {
  let r = await sbx.commands.run('echo out; echo err >&2')
  assert.deepEqual([r.stdout, r.stderr, r.exitCode], ['out\n', 'err\n', 0])

  await assert.rejects(sbx.commands.run('echo partial; echo boom >&2; exit 3'), (e) => {
    assert.ok(e instanceof CommandExitError, String(e))
    assert.deepEqual([e.exitCode, e.stdout, e.stderr], [3, 'partial\n', 'boom\n'])
    return true
  })

  const out = []
  const err = []
  r = await sbx.commands.run('for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.1; done', {
    onStdout: (d) => out.push(d),
    onStderr: (d) => err.push(d),
  })
  assert.equal(out.join(''), 'o1\no2\no3\n')
  assert.equal(err.join(''), 'e1\ne2\ne3\n')
  assert.equal(r.stdout, 'o1\no2\no3\n')

  r = await sbx.commands.run('pwd; echo $A', { cwd: '/tmp', envs: { A: 'one two' } })
  assert.equal(r.stdout, '/tmp\none two\n')
  r = await sbx.commands.run('pwd; whoami')
  assert.equal(r.stdout, `${HOME}\n${USER}\n`)

  await assert.rejects(sbx.commands.run('pwd', { cwd: `${HOME}/no-such-dir` }), InvalidArgumentError)
})

it('background + connect + wait, list, kill', async () => {
  const h = await sbx.commands.run('sleep 1; echo done', { background: true })
  assert.ok(h.pid > 0)
  const c = await sbx.commands.connect(h.pid)
  assert.equal(c.pid, h.pid)
  const r = await c.wait()
  assert.deepEqual([r.stdout, r.exitCode], ['done\n', 0])

  const long = await sbx.commands.run('sleep 60', { background: true })
  const procs = await sbx.commands.list()
  const p = procs.find((x) => x.pid === long.pid)
  assert.ok(p, JSON.stringify(procs))
  assert.equal(p.cmd, '/bin/bash')
  assert.deepEqual(p.args, ['-l', '-c', 'sleep 60'])

  assert.equal(await sbx.commands.kill(long.pid), true)
  await assert.rejects(long.wait(), (e) => {
    assert.ok(e instanceof CommandExitError, String(e))
    assert.equal(e.exitCode, -1)
    return true
  })
  assert.ok(!(await sbx.commands.list()).some((x) => x.pid === long.pid))
  assert.equal(await sbx.commands.kill(999999), false)
  await assert.rejects(sbx.commands.connect(999999), NotFoundError)
})

it('stdin: send and close', async () => {
  const h = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(h.pid, 'hello\n')
  await sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  assert.deepEqual([r.stdout, r.exitCode], ['hello\n', 0])
})

it('pty with resize', async () => {
  let buf = ''
  const dec = new TextDecoder()
  const t = await sbx.pty.create({ rows: 24, cols: 80, onData: (d) => (buf += dec.decode(d, { stream: true })) })
  await sbx.pty.sendInput(t.pid, new TextEncoder().encode('stty size\n'))
  await waitFor(() => /\b24 80\b/.test(buf), 15_000, `"24 80" in ${JSON.stringify(buf)}`)
  const pos = buf.length
  await sbx.pty.resize(t.pid, { cols: 100, rows: 30 })
  await sbx.pty.sendInput(t.pid, new TextEncoder().encode('stty size; exit\n'))
  const r = await t.wait()
  assert.equal(r.exitCode, 0)
  assert.match(buf.slice(pos), /\b30 100\b/)

  const t2 = await sbx.pty.create({ rows: 24, cols: 80, onData: () => {} })
  assert.equal(await sbx.pty.kill(t2.pid), true)
  await assert.rejects(t2.wait(), CommandExitError)
  assert.equal(await sbx.pty.kill(999999), false)
})

it('files: write, read, list, exists, getInfo, rename, makeDir, remove', async () => {
  const d = `${HOME}/js-${runId}`
  const fs = sbx.files
  assert.equal(await fs.makeDir(d), true)
  assert.equal(await fs.makeDir(d), false)

  const info = await fs.write(`${d}/a.txt`, 'Hello, world!')
  assert.deepEqual([info.name, info.path, info.type], ['a.txt', `${d}/a.txt`, FileType.FILE])
  assert.equal(await fs.read(`${d}/a.txt`), 'Hello, world!')
  assert.deepEqual(Buffer.from(await fs.read(`${d}/a.txt`, { format: 'bytes' })), Buffer.from('Hello, world!'))
  const bin = new Uint8Array([0, 1, 2, 255, 254])
  await fs.write(`${d}/b.bin`, bin.buffer)
  assert.deepEqual(Buffer.from(await fs.read(`${d}/b.bin`, { format: 'bytes' })), Buffer.from(bin))

  const many = await fs.write([
    { path: `${d}/m1.txt`, data: 'one' },
    { path: `${d}/m2.txt`, data: 'two' },
  ])
  assert.deepEqual(many.map((w) => w.path), [`${d}/m1.txt`, `${d}/m2.txt`])
  assert.equal(await fs.read(`${d}/m2.txt`), 'two')

  await fs.makeDir(`${d}/sub`)
  const list = await fs.list(d)
  assert.deepEqual(
    list.map((e) => [e.name, e.type]),
    [['a.txt', FileType.FILE], ['b.bin', FileType.FILE], ['m1.txt', FileType.FILE], ['m2.txt', FileType.FILE], ['sub', FileType.DIR]],
  )

  assert.equal(await fs.exists(`${d}/a.txt`), true)
  assert.equal(await fs.exists(`${d}/nope`), false)
  const gi = await fs.getInfo(`${d}/a.txt`)
  assert.deepEqual([gi.name, gi.type, gi.path, gi.size, gi.mode, gi.permissions, gi.owner], ['a.txt', FileType.FILE, `${d}/a.txt`, 13, 0o644, '-rw-r--r--', USER])
  const di = await fs.getInfo(`${d}/sub`)
  assert.deepEqual([di.type, di.mode, di.permissions], [FileType.DIR, 0o755, 'drwxr-xr-x'])

  const moved = await fs.rename(`${d}/a.txt`, `${d}/c.txt`)
  assert.equal(moved.path, `${d}/c.txt`)
  assert.equal(await fs.exists(`${d}/a.txt`), false)
  assert.equal(await fs.read(`${d}/c.txt`), 'Hello, world!')

  await fs.remove(`${d}/c.txt`)
  assert.equal(await fs.exists(`${d}/c.txt`), false)
  await fs.remove(`${d}/c.txt`) // missing: not an error
  await assert.rejects(fs.read(`${d}/c.txt`), FileNotFoundError)
  await assert.rejects(fs.getInfo(`${d}/c.txt`), FileNotFoundError)

  await sbx.commands.run('ln -s m1.txt link.txt', { cwd: d })
  const link = await fs.getInfo(`${d}/link.txt`)
  assert.deepEqual([link.type, link.symlinkTarget], [FileType.FILE, `${d}/m1.txt`])
})

it('50 MiB upload and download', async () => {
  const data = crypto.randomBytes(50 * MiB)
  const digest = crypto.createHash('sha256').update(data).digest('hex')
  const path = `${HOME}/js-big-${runId}.bin`
  await sbx.files.write(path, data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength))
  const r = await sbx.commands.run(`sha256sum ${path}`)
  assert.equal(r.stdout.split(/\s+/)[0], digest)
  const back = await sbx.files.read(path, { format: 'bytes' })
  assert.equal(back.length, 50 * MiB)
  assert.equal(crypto.createHash('sha256').update(back).digest('hex'), digest)
  await sbx.files.remove(path)
})

it('watchDir sees create and write of a new file', async () => {
  const d = `${HOME}/jswatch-${runId}`
  await sbx.files.makeDir(d)
  const events = []
  const handle = await sbx.files.watchDir(d, (e) => events.push([e.type, e.name]))
  await sbx.files.write(`${d}/new.txt`, 'This file will be watched.')
  await waitFor(() => events.some(([t]) => t === FilesystemEventType.WRITE), 10_000, 'WRITE')
  await sleep(500)
  assert.deepEqual(events, [
    [FilesystemEventType.CREATE, 'new.txt'],
    [FilesystemEventType.CHMOD, 'new.txt'],
    [FilesystemEventType.WRITE, 'new.txt'],
  ])
  await handle.stop()

  await sbx.files.makeDir(`${d}/nested`)
  const rec = []
  const h2 = await sbx.files.watchDir(d, (e) => rec.push([e.type, e.name]), { recursive: true })
  await sbx.files.write(`${d}/nested/f.txt`, 'x')
  await waitFor(() => rec.some(([t, n]) => t === FilesystemEventType.WRITE && n === 'nested/f.txt'), 10_000, 'nested WRITE')
  await h2.stop()
})

it('setTimeout and connect', async () => {
  const s = await create()
  await s.setTimeout(600_000)
  let info = await s.getInfo()
  assert.ok(Math.abs((info.endAt - Date.now()) / 1000 - 600) <= 5, `endAt ${info.endAt}`)
  await Sandbox.setTimeout(s.sandboxId, 200_000)
  info = await Sandbox.getInfo(s.sandboxId)
  assert.ok(Math.abs((info.endAt - Date.now()) / 1000 - 200) <= 5, `endAt ${info.endAt}`)

  await s.files.write(`${HOME}/connected.txt`, 'hi')
  const again = await Sandbox.connect(s.sandboxId)
  assert.equal(again.sandboxId, s.sandboxId)
  assert.equal(await again.files.read(`${HOME}/connected.txt`), 'hi')
  assert.equal((await again.commands.run('echo ok')).stdout, 'ok\n')
})

it('list with a metadata filter, pagination', async () => {
  const group = `g-${crypto.randomBytes(4).toString('hex')}`
  const a = await create({ metadata: { group, which: 'a' } })
  const b = await create({ metadata: { group, which: 'b' } })
  const c = await create({ metadata: { group, which: 'c' } })

  const only = await Sandbox.list({ query: { metadata: { group, which: 'b' } } }).nextItems()
  assert.deepEqual(only.map((s) => s.sandboxId), [b.sandboxId])
  assert.deepEqual(only[0].metadata, { group, which: 'b', run: runId })

  const tricky = `a b&c=d/é?%${group}`
  const t = await create({ metadata: { tricky } })
  assert.deepEqual((await Sandbox.list({ query: { metadata: { tricky } } }).nextItems()).map((s) => s.sandboxId), [t.sandboxId])

  const pager = Sandbox.list({ query: { metadata: { group } }, limit: 1 })
  const pages = []
  for (let i = 0; i < 3; i++) {
    assert.equal(pager.hasNext, true, `before page ${i + 1}`)
    const items = await pager.nextItems()
    assert.equal(items.length, 1, `page ${i + 1}`)
    pages.push(items[0].sandboxId)
  }
  assert.equal(pager.hasNext, false)
  assert.deepEqual(pages, [c.sandboxId, b.sandboxId, a.sandboxId])
})

it('kill, then not found everywhere', async () => {
  const s = await create()
  const id = s.sandboxId
  assert.equal(await s.kill(), true)
  assert.equal(await Sandbox.kill(id), false)
  await assert.rejects(Sandbox.connect(id), SandboxNotFoundError)
  await assert.rejects(Sandbox.getInfo(id), SandboxNotFoundError)
  assert.equal(await s.isRunning(), false)
  await assert.rejects(s.commands.run('echo no'), SandboxError)
  assert.ok(!(await Sandbox.list({ query: { metadata: { run: runId } } }).nextItems()).some((x) => x.sandboxId === id))
})

it('unknown template is rejected with the 404', async () => {
  await assert.rejects(Sandbox.create('no-such-template-js'), (e) => {
    assert.ok(e instanceof SandboxError, String(e))
    assert.match(String(e.message), /404/)
    return true
  })
})
