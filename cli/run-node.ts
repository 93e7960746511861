import { startHttp, type HttpEdge } from "../gateway/http-server.js";
import { TallyNode, type NodeOptions } from "../node/tally-node.js";

export interface RunningNode {
  node: TallyNode;
  http: HttpEdge;
  stop(): Promise<void>;
}

/** A node with its HTTP edge: what `tally node` and `tally up` run, and what tests start. */
export async function runNode(options: NodeOptions, httpPort: number, httpHost = "127.0.0.1"): Promise<RunningNode> {
  const node = new TallyNode(options);
  await node.start();
  const http = await startHttp(node, httpPort, httpHost);
  await node.announceHttp(`http://${httpHost}:${http.port}/`);
  return {
    node,
    http,
    async stop() {
      await http.close();
      await node.stop();
    },
  };
}
