#!/usr/bin/env python3
# Opens N idle authenticated Redis sessions through a bench gateway (bench/gateway-cmd.sh) and
# reports the gateway RSS per session and the upstream client count before and after.
# usage: bench/idle-redis.py GATEWAY_ENV_FILE(with GATEWAY_REDIS_URL and PID) N UPSTREAM_PORT UPSTREAM_PASSWORD
import asyncio, os, sys, re
env = dict(l.strip().split('=',1) for l in open(sys.argv[1]) if '=' in l)
url = env['GATEWAY_REDIS_URL']; pid = env['PID']
m = re.match(r'redis://bench:([^@]+)@127.0.0.1:(\d+)', url); tok, port = m.group(1), int(m.group(2))
N = int(sys.argv[2]); up_port = int(sys.argv[3]); up_pw = sys.argv[4]
def rss():
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
async def up_clients():
    r, w = await asyncio.open_connection('127.0.0.1', up_port)
    w.write(f'AUTH {up_pw}\r\nCLIENT LIST\r\n'.encode()); await w.drain()
    data = b''
    while data.count(b'\n') < 2 or not data.endswith(b'\r\n'):
        data += await r.read(1 << 20)
        if b'$' in data:
            hdr_end = data.index(b'\r\n', data.index(b'$'))
            n = int(data[data.index(b'$')+1:hdr_end])
            if len(data) >= hdr_end + 2 + n + 2: break
    w.close()
    return data.split(b'$',1)[1].count(b'\n') - 1 - 1
async def one(sem, conns):
    async with sem:
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(f'AUTH bench {tok}\r\nGET key:1\r\n'.encode()); await w.drain()
        got = b''
        while got.count(b'\r\n') < 2: got += await r.read(100)
        conns.append((r, w))
async def main():
    before = rss(); ub = await up_clients()
    conns = []; sem = asyncio.Semaphore(200)
    await asyncio.gather(*(one(sem, conns) for _ in range(N)))
    await asyncio.sleep(1)
    after = rss(); ua = await up_clients()
    print(f"{N} idle sessions: gateway RSS {before/1024:.1f} -> {after/1024:.1f} MB ({(after-before)/N:.1f} KB each); upstream clients {ub} -> {ua}")
asyncio.run(main())
