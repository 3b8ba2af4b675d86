import { Counter, Gauge, Histogram } from "prom-client";
import { serviceRegistry } from "@filerelay/core/internal";

/** Which upload API a byte or file came through. */
export type UploadApi = "multipart" | "chunked" | "tus" | "job";

/**
 * The gateway's Prometheus metrics, on a registry of its own (as the other
 * services): requests by route and status, upload bytes and files by API,
 * uploads in progress, WebSocket clients, and the NATS connection gauges
 * core's watchNatsConnection keeps.
 */
export function createGatewayMetrics() {
  const { registry, registers, natsConnected, natsReconnects, close } = serviceRegistry("gateway");
  const metrics = {
    registry,
    requests: new Counter({
      name: "filerelay_http_requests_total",
      help: "HTTP requests answered, by route, method and status",
      labelNames: ["route", "method", "status"],
      registers,
    }),
    requestSeconds: new Histogram({
      name: "filerelay_http_request_duration_seconds",
      help: "Time to answer an HTTP request (an upload: until its PubAck), by route",
      labelNames: ["route", "method"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    uploadBytes: new Counter({
      name: "filerelay_upload_bytes_total",
      help: "Bytes received by the upload APIs",
      labelNames: ["api"],
      registers,
    }),
    filesPublished: new Counter({
      name: "filerelay_files_total",
      help: "Files published by the gateway, by API",
      labelNames: ["api", "outcome"],
      registers,
    }),
    activeUploads: new Gauge({
      name: "filerelay_active_uploads",
      help: "Uploads being received or published right now",
      labelNames: ["api"],
      registers,
    }),
    wsClients: new Gauge({
      name: "filerelay_websocket_clients",
      help: "WebSocket clients connected to /ws",
      registers,
    }),
    natsConnected,
    natsReconnects,
    close,
  };
  return metrics;
}

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;
