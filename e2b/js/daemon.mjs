// Start and stop a `stockade serve` for the E2B JS SDK tests: a fresh STOCKADE_HOME, a free
// loopback port, STOCKADE_E2B_DRIVER naming the driver, a token from `stockade token create` as
// the E2B API key. The same contract as e2b/python/stockade_daemon.py.

import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const repo = path.resolve(here, '..', '..')

export function stockadeBin() {
  return process.env.STOCKADE_BIN || path.join(repo, 'target', 'debug', 'stockade')
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

export class Daemon {
  constructor(driver = 'native') {
    this.driver = driver
    this.bin = stockadeBin()
    this.home = fs.mkdtempSync(path.join(os.tmpdir(), `stockade-e2b-js-${driver}-`))
    this.socket = path.join(this.home, 'd.sock')
    this.logPath = path.join(this.home, 'daemon.log')
    this.proc = null
    this.token = null
  }

  env() {
    const env = { ...process.env, STOCKADE_HOME: this.home, STOCKADE_E2B_DRIVER: this.driver, NO_COLOR: '1' }
    for (const k of Object.keys(env)) if (k.startsWith('E2B_')) delete env[k]
    return env
  }

  async start() {
    if (!fs.existsSync(this.bin)) throw new Error(`no stockade binary at ${this.bin} (build it, or set STOCKADE_BIN)`)
    this.port ??= await freePort()
    this.url = `http://127.0.0.1:${this.port}`
    if (!this.token) {
      const r = spawnSync(this.bin, ['token', 'create', '--name', 'e2b'], { env: this.env(), encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`stockade token create failed (${r.status}): ${r.stderr}`)
      const lines = r.stdout.split('\n').map((l) => l.trim()).filter(Boolean)
      if (!lines.length) throw new Error(`stockade token create printed no token: ${r.stderr}`)
      this.token = lines[lines.length - 1]
    }
    const log = fs.openSync(this.logPath, 'a')
    fs.writeSync(log, `\n==== start driver=${this.driver} port=${this.port}\n`)
    this.proc = spawn(this.bin, ['serve', '--listen', `127.0.0.1:${this.port}`, '--socket', this.socket], {
      env: this.env(),
      stdio: ['ignore', log, log],
      detached: true,
    })
    fs.closeSync(log)
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })))
    const deadline = Date.now() + 60_000
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`stockade serve exited ${this.proc.exitCode}:\n${this.logTail()}`)
      try {
        await fetch(`${this.url}/api/health`, { signal: AbortSignal.timeout(2000) })
        break // any HTTP answer means it is up
      } catch {
        if (Date.now() > deadline) throw new Error(`stockade serve did not answer on ${this.url}:\n${this.logTail()}`)
        await sleep(100)
      }
    }
    return this
  }

  /** What the SDK reads: the token as API key, the daemon as API and sandbox URL. */
  applySdkEnv() {
    delete process.env.E2B_DEBUG
    process.env.E2B_API_KEY = this.token
    process.env.E2B_API_URL = this.url
    process.env.E2B_SANDBOX_URL = this.url
  }

  /** SIGTERM; resolves to the exit code, or null when it did not exit within `graceMs`. */
  async stop(graceMs = 30_000) {
    if (!this.proc || this.proc.exitCode !== null) return this.proc ? this.proc.exitCode : 0
    this.proc.kill('SIGTERM')
    let timer
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs)
    })
    const r = await Promise.race([this.exited, timeout])
    clearTimeout(timer)
    if (r === 'timeout') {
      this.proc.kill('SIGKILL')
      await this.exited
      return null
    }
    return r.code
  }

  cleanup() {
    if (!process.env.STOCKADE_E2B_KEEP_HOME) fs.rmSync(this.home, { recursive: true, force: true })
  }

  logTail(lines = 60) {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n')
    } catch {
      return '(no daemon log)'
    }
  }
}
