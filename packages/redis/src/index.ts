export { createRedisTransport, type RedisTransport, type RedisTransportOptions } from './transport.js';
