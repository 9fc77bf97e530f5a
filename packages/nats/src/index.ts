export { createNatsTransport, type NatsTransport, type NatsTransportOptions } from './transport.js';
export { safeName } from './names.js';
