// Declarations only (see README.md): ProcessGroupGloo.hpp includes this header.
#pragma once
