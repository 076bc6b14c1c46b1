#!/usr/bin/env python3
"""A minimal SMTP sink for rough throughput runs: accepts every message, counts them.

Usage: smtp_sink.py PORT COUNT_FILE
Writes the number of accepted messages to COUNT_FILE every 100 ms. Loopback only.
"""
import asyncio
import sys

count = 0


async def handle(reader, writer):
    global count
    writer.write(b"220 sink ESMTP\r\n")
    await writer.drain()
    in_data = False
    while True:
        line = await reader.readline()
        if not line:
            break
        if in_data:
            if line == b".\r\n":
                in_data = False
                count += 1
                writer.write(b"250 2.0.0 Ok: queued as S%d\r\n" % count)
                await writer.drain()
            continue
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n")
        elif verb == b"DATA":
            in_data = True
            writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 2.0.0 Bye\r\n")
            await writer.drain()
            break
        else:
            writer.write(b"250 2.0.0 Ok\r\n")
        await writer.drain()
    writer.close()


async def report(path):
    while True:
        await asyncio.sleep(0.1)
        with open(path, "w") as f:
            f.write(str(count))


async def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    asyncio.create_task(report(path))
    async with server:
        await server.serve_forever()


asyncio.run(main())
