// A Node.js service enqueueing fanrag ingest jobs on a BullMQ queue, with its own job options.
//
//   node producer.mjs --redis redis://127.0.0.1:6379/0 --queue ingest-jobs [--prefix bull]
//                     [--attempts 3] [--backoff-delay 50] [--backoff-type exponential] [--jitter 1]
//                     [--name ingest] FILE...
//
// Job data follows fanrag's schema: { "path": "/abs/file" } at least; "uri", "content_hash" and
// "options" (e.g. { "password": "..." }) are optional. Prints {"ids": [...]} as JSON.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import IORedis from 'ioredis';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    redis: { type: 'string', default: 'redis://127.0.0.1:6379/0' },
    queue: { type: 'string', default: 'ingest-jobs' },
    prefix: { type: 'string', default: 'bull' },
    name: { type: 'string', default: 'ingest' },
    attempts: { type: 'string', default: '3' },
    'backoff-type': { type: 'string', default: 'exponential' },
    'backoff-delay': { type: 'string', default: '1000' },
    jitter: { type: 'string', default: '0' },
  },
});

const connection = new IORedis(values.redis, { maxRetriesPerRequest: null });
const queue = new Queue(values.queue, { connection, prefix: values.prefix });
try {
  const opts = {
    attempts: Number(values.attempts),
    backoff: { type: values['backoff-type'], delay: Number(values['backoff-delay']), jitter: Number(values.jitter) },
  };
  const jobs = await queue.addBulk(
    positionals.map((file) => ({ name: values.name, data: { path: path.resolve(file) }, opts })),
  );
  console.log(JSON.stringify({ ids: jobs.map((job) => job.id) }));
} finally {
  await queue.close();
  await connection.quit();
}
