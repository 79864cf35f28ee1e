/* vec.h — forwarding header while includes move to vecfiles.h; removed by the next commit. */
#include "vecfiles.h"
