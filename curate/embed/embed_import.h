/* embed_import.h — forwarding header while includes move to the folder's short names; removed by the next commit. */
#include "import.h"
