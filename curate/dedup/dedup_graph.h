/* dedup_graph.h — forwarding header while includes move to the folder's short names; removed by the next commit. */
#include "graph.h"
