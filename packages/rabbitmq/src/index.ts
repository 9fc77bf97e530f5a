export {
  createRabbitMqTransport,
  deleteRabbitMqTopology,
  DEFAULT_AMQP_URL,
  type RabbitMqReconnectOptions,
  type RabbitMqTransport,
  type RabbitMqTransportOptions,
} from './transport.js';
export { namesFor, type RabbitMqNames, type RetentionOptions } from './topology.js';
/** The partition a stream id lands in: the same hash every eventline part uses. */
export { partitionOf } from '@eventline/core/backend';
